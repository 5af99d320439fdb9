"""The one exception type for bad input a user can fix.

The CLI prints ``str(error)`` as a single line on stderr and exits with code 2.
Messages name the thing that is wrong and how to fix it.
"""


class HellopackError(Exception):
    """Bad input (path, data, model, config): a clear one-line message, exit code 2."""


class DataPathError(HellopackError):
    """Bad data location: the message's fix names the flag that gave it (``--data-dir`` unless re-worded).

    The data layer is shared by commands that take the location from different flags (``build
    --data-dir``, ``train --val``): ``fix`` names the flag as ``{flag}``, and a command whose flag is
    another one raises :meth:`for_flag` instead. ``download`` is advice only for commands that have
    ``--download``, given before the fix (``for_flag(..., download=False)`` leaves it out).
    """

    def __init__(self, problem: str, fix: str = "", download: str = "", flag: str = "--data-dir") -> None:
        self.problem, self.fix, self.download, self.flag = problem, fix, download, flag
        advice = " or ".join(a for a in (download, fix.replace("{flag}", flag)) if a)
        super().__init__(f"{problem}; {advice}" if advice else problem)

    def __reduce__(self):  # pickles (DataLoader workers, torchrun) with every part, not just the message
        return type(self), (self.problem, self.fix, self.download, self.flag)

    def for_flag(self, flag: str, *, download: bool = True) -> "DataPathError":
        return DataPathError(self.problem, self.fix, self.download if download else "", flag)
