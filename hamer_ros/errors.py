"""The package's own user errors: a bad input, a missing file, a setting that does not fit, a missing optional
dependency. `python -m hamer_ros` prints these as one line (their message says what to do) and shows a full
traceback for anything else, which is a bug to report.

`UserError` is the type to catch. The subclasses also derive from the builtin exception a caller would expect
(ValueError, FileNotFoundError, RuntimeError), so code that catches those keeps working.
"""
import contextlib


class UserError(Exception):
    """An error the user can fix; its message says how."""


class InputError(UserError, ValueError):
    """An input (file content, option value, archive) that cannot be used."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or that a command needs) is not there."""


class SetupError(UserError, RuntimeError):
    """The environment lacks something (a package, a device, free disk space)."""


@contextlib.contextmanager
def file_errors_are_user_errors():
    """Around loaders whose contract is "ValueError: this file is unusable (the message names it and says
    why), FileNotFoundError: it is missing": those come out as InputError / MissingFileError, so the command
    line prints them as one line. Other exceptions pass unchanged."""
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError as exc:
        raise MissingFileError(str(exc)) from exc
    except ValueError as exc:
        raise InputError(str(exc)) from exc
