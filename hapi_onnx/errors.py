"""The exception types for mistakes a user can make.

:class:`HapiError` is the base: anything else that escapes is a bug and keeps its traceback; the
CLI turns a :class:`HapiError` into one line on stderr and exit status 2. A caller that branches
on the kind of mistake catches one of the few subclasses:

- :class:`DataError`: input data that cannot be used (a data set, an image, an array given to
  ``predict``);
- :class:`BundleError`: a bundle that is missing, malformed or tampered with;
- :class:`InfeasibleError`: constraints that no design meets.

Standard library only: the runtime uses it on the edge device.
"""

import contextlib
from collections.abc import Iterator


class HapiError(Exception):
    """A user error: a bad file, a wrong shape, an unknown device, a tampered bundle, ..."""


class DataError(HapiError):
    """Input data that cannot be used: unreadable, malformed, of the wrong shape, type or classes."""


class BundleError(HapiError):
    """A bundle that is missing, malformed, tampered with, or does not match its stage files."""


class InfeasibleError(HapiError):
    """Constraints that no design meets on the search data."""


@contextlib.contextmanager
def as_error(kind: type[HapiError]) -> Iterator[None]:
    """Raise a plain :class:`HapiError` met inside as ``kind``, same message; subclasses pass through."""
    try:
        yield
    except HapiError as err:
        if type(err) is not HapiError:
            raise
        raise kind(str(err)) from None
