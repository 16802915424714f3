"""The base of every error whose message already says what went wrong and what to do.

The command line prints such an error and exits 2 without a traceback. It lives here, at the bottom,
so that ``antimask --help`` and a config error can answer before torch and Lightning are imported.
"""


class AntimaskError(Exception):
    """An error for the user, not a bug: the message names the file or key and the remedy."""
