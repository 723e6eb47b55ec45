"""The package's own user-error type: a problem with the user's input (a file, a setting), whose message says
what is wrong and what to do. Command-line tools print it as one line; anything else is a bug and keeps its
traceback."""


class UserError(Exception):
    """Bad input from the user (a damaged or hostile file, an out-of-range setting); the message names it."""
