"""Numba kernels (see :mod:`ruvattn.kernels.attention`) and the helpers around them.

:mod:`~ruvattn.kernels.attention` holds the shared primitives (dot product,
vectorised exp, softmax, online softmax); the other modules
(:mod:`~ruvattn.kernels.hyperbolic`, :mod:`~ruvattn.kernels.graph`) inline them.
Numba's on-disk cache stamps a compiled function with its *own* source file
only, so editing a primitive would leave the cached machine code of those
modules stale.  Importing this package therefore registers a cache locator
(Numba's documented ``CacheImpl`` locator hook) whose source stamp for every
module in this folder also covers ``attention.py``: a change there invalidates
the caches that inlined it.
"""

from __future__ import annotations

import os
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_SHARED = os.path.join(_HERE, "attention.py")


def _stamp(path: str) -> tuple[float, int]:
    st = os.stat(path)
    return st.st_mtime, st.st_size


def _install_locator() -> bool:
    """Put the kernel-folder locators first in Numba's list; ``False`` if this Numba lacks the hook."""
    try:
        from numba.core.caching import CacheImpl, InTreeCacheLocator, UserProvidedCacheLocator
    except ImportError:
        return False

    def shared_stamp(base: Any) -> Any:
        """A subclass of the locator ``base`` for files in this folder, stamped with ``attention.py`` too."""

        class Locator(base):
            @classmethod
            def from_function(cls, py_func: Any, py_file: str) -> Any:
                if os.path.dirname(os.path.abspath(py_file)) != _HERE:
                    return None
                return super().from_function(py_func, py_file)

            def get_source_stamp(self) -> Any:
                return (super().get_source_stamp(), _stamp(_SHARED))

        Locator.__name__ = Locator.__qualname__ = "RuvattnKernel" + base.__name__
        return Locator

    classes = CacheImpl._locator_classes
    if not any(getattr(c, "__name__", "").startswith("RuvattnKernel") for c in classes):
        CacheImpl._locator_classes = [
            shared_stamp(UserProvidedCacheLocator),
            shared_stamp(InTreeCacheLocator),
            *classes,
        ]
    return True


SHARED_STAMP_LOCATOR = _install_locator()
