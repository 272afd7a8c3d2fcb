"""The ICT-FaceKit commit the default model is converted from, and the conversion's version stamp.

Kept apart from :mod:`headcast.model.ict` (which loads the rig designer and SciPy's solvers): the registry
compares the stamp on every load of the default model.
"""

COMMIT = "da5f95a"
VERSION = f"ict-facekit-{COMMIT}/headcast-2"
