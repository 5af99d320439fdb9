"""The one exception type for bad input a user can fix.

The CLI prints ``str(error)`` as a single line on stderr and exits with code 2.
Messages name the thing that is wrong and how to fix it.
"""


class HellopackError(Exception):
    """Bad input (path, data, model, config): a clear one-line message, exit code 2."""
