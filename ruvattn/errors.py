"""One error hierarchy for the whole package.

Every error raised on bad input derives from :class:`AttentionError`, which is
a :class:`ValueError`, so ``except ValueError`` keeps working for callers that
do not know about this package.  The kinds follow the ruvector-attention
specification.  Messages name the operation first, then the argument and the
constraint, then what was received, then (where one exists) a fix::

    multi_head.forward: keys has shape (7, 64), expected (n, 128).
"""

from __future__ import annotations

__all__ = [
    "AttentionError",
    "DimensionMismatch",
    "EmptyInput",
    "Internal",
    "InvalidConfig",
    "MissingDependency",
    "NumericalInstability",
    "OutOfBounds",
    "Unsupported",
]


class AttentionError(ValueError):
    """Root of every error this package raises on bad input or configuration."""


class DimensionMismatch(AttentionError):
    """An array has the wrong number of dimensions or the wrong length."""


class EmptyInput(AttentionError):
    """There is nothing to attend over (no keys, or every key masked out)."""


class NumericalInstability(AttentionError):
    """An input is NaN or infinite, or a result would overflow the dtype."""


class InvalidConfig(AttentionError):
    """A constructor or config parameter is out of its allowed range."""


class OutOfBounds(AttentionError, IndexError):
    """An id or index points outside the table it indexes, or a point lies outside the domain its
    mechanism is defined on (a query, key or value on or outside the Poincaré ball)."""


class Unsupported(AttentionError):
    """The mechanism cannot honour this request (for example a mask it cannot apply)."""


class MissingDependency(AttentionError, ImportError):
    """An optional dependency a feature needs is not installed (the message names the extra to install)."""


class Internal(AttentionError):
    """A broken invariant inside the library (a bug to report), never a problem with the input."""
