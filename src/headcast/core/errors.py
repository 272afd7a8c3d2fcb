"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class HeadcastError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``headcast: error: <message>`` and exits with status 2;
    ``--debug`` shows the traceback instead.
    """
