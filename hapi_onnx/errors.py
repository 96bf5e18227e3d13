"""The one exception type for mistakes a user can make.

Anything else that escapes is a bug and keeps its traceback; the CLI turns a
:class:`HapiError` into one line on stderr and exit status 2.
"""


class HapiError(Exception):
    """A user error: a bad file, a wrong shape, an unknown device, a tampered bundle, ..."""
