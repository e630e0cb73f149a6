"""The one exception the data layer shows to users."""

from ..config import UserError


class DataError(UserError):
    """A user-facing problem with data; ``str(e)`` is one line saying what happened and what to do.

    The CLI prints it and exits with code 1 (no traceback). Programming errors (a negative batch
    size, a bad argument type) stay ``ValueError``/``TypeError``.
    """
