"""``python -m headcast.cli``: the same as the ``headcast`` command."""

import sys

from headcast.cli import main

sys.exit(main())
