"""Checks on single values that every layer shares (standard library only: the CLI's ``--help`` and
the runtime import it)."""

import math
import numbers
from typing import Any


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number: a Python or numpy int or float, never a bool.

    The one finite-number check for every value a user gives (thresholds, constraints, design and
    latency-table fields, build options, preprocessing specs). numpy's numbers register as
    ``numbers.Real``; its bools do not.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float's range
        return False
