"""The one exception type for mistakes a user can make (bad input, bad option, missing file)."""


class VlmtuneError(Exception):
    """A user-facing error: the CLI prints its message without a traceback and exits 1.

    Messages name the file, the line or record, the field, what was expected and what was found.
    """
