"""Numba kernels (see :mod:`ruvattn.kernels.attention`) and the cache locator that keeps them fresh.

:mod:`~ruvattn.kernels.attention` holds the shared primitives (dot product, vectorised exp,
softmax, online softmax); the other modules of this folder (hyperbolic, GAT, linear, routing)
import them, inlined (``inline="always"``) or linked into their own machine code.

What Numba's on-disk cache checks (``numba/core/caching.py`` of 0.59, 0.62, 0.65, 0.67, 0.68.1)
----------------------------------------------------------------------------------------------
A cached kernel is loaded when two things match:

* the *source stamp* that the function's cache locator returns for the function's **own file**
  (``_SourceFileBackedLocatorMixin.get_source_stamp``): ``(st_mtime, st_size)`` in 0.59-0.67,
  a sha256 of the file's bytes in 0.68.1 (installed here).  It is stored in the ``.nbi`` index
  and compared with ``!=``;
* the index key (``Cache._index_key``): signature, target CPU name and features, and sha256 of
  the function's bytecode and closure cells.  The index is also dropped when
  ``numba.__version__`` changes, so a Numba upgrade recompiles everything once.

Nothing there covers another file: Numba's caching notes say so ("Cache invalidation fails to
recognize changes in symbols defined in a different file"; the upstream pull requests to
extend it, numba#8396 and numba#9563, were not merged).  An edit of ``attention.py`` alone
would leave the cached code of ``hyperbolic.py`` & co. stale, and so would an edit of the
``fastmath`` flag set in :mod:`ruvattn._config` (decorator options are not in the key).

Numba has no public per-function hook to add a dependency.  What exists:

* ``NUMBA_CACHE_LOCATOR_CLASSES`` (documented, numba >= 0.62): a process-wide list of locator
  classes read from the environment when Numba's config loads.  A library cannot set it for
  its users without overriding theirs, and 0.59-0.61 lack it.  It takes dotted names, so a
  user who sets it keeps these kernels cached by listing ``ruvattn.kernels.KernelCacheDirLocator``,
  ``ruvattn.kernels.KernelInTreeLocator`` and ``ruvattn.kernels.KernelUserWideLocator`` first.
* Writing a hash of ``attention.py`` into every dependent module (so Numba's own stamp
  changes): needs a regeneration step after each edit, and loads stale code until it runs.
* ``CacheImpl._locator_classes``: a *private* class attribute (in all five versions read),
  which ``CacheImpl.__init__`` walks when that variable is unset.  The locator classes it lists
  were private too up to 0.61 (``_InTreeCacheLocator``...), public from 0.62.

So this package uses the last one, guarded:

1. **Stamp** (:func:`source_stamp`): the sha256 of the kernel module's bytes and of every
   ``ruvattn`` module it imports, transitively (found by parsing its import statements, so
   ``attention.py`` and ``_config.py`` are in it; a sibling it does not import is not).
   Content, not mtime: a fresh checkout (new mtimes) of the same sources reuses the cache, one
   changed byte recompiles, whatever numba's own stamp is.
2. **Locators** (:data:`LOCATORS`): subclasses of numba's three file-backed locators
   (``NUMBA_CACHE_DIR``, ``__pycache__`` beside the source, the user-wide cache directory),
   found under either spelling, that answer only for files in this folder and are put first in
   the list.
3. **Check at import**: numba builds its ``CacheImpl`` for a function of this file, and the
   locator it picks must be one of ours with our stamp.  If not (a numba release moved the
   hook, ``NUMBA_CACHE_LOCATOR_CLASSES`` names other classes, the sources are not plain files,
   no cache directory is writable), caching is switched off for every kernel
   (``ruvattn._config.CACHE = False``, set before any kernel module is imported) with a
   ``RuntimeWarning``: a slow start, never stale machine code.  :data:`CACHE_PROBLEM` says why.

``tests/test_kernel_cache.py`` holds this to account: equal stamps when only mtimes change,
new stamps when ``attention.py`` or ``_config.py`` changes, and, end to end in fresh processes
on a temporary copy of this file, a cache hit after a ``touch`` and a recompile (with the new
result) after an edit of the shared module; and the fallback when the hook is missing.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import warnings
from typing import Any

from ruvattn import _config

__all__ = ["CACHE_PROBLEM", "LOCATORS", "source_stamp"]

_HERE = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def _digest(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file's bytes (memoised on its stat, so an edit in a running process is re-read)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not those inside functions)."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    return found


def _module_file(root: str, parts: list[str]) -> str | None:
    """The source file of module ``<package>.<parts>`` under the package folder ``root``, if any."""
    base = os.path.join(root, *parts)
    for candidate in ([base + ".py"] if parts else []) + [os.path.join(base, "__init__.py")]:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


@functools.cache
def _imports(path: str, mtime_ns: int, size: int, root: str) -> tuple[str, ...]:
    """The files under the package folder ``root`` that the module at ``path`` imports, directly."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    here = os.path.relpath(path, os.path.dirname(root))[: -len(".py")].split(os.sep)[:-1]  # its package
    found: set[str] = set()
    for node in _top_level_imports(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name.split("."), []) for alias in node.names]
        else:
            base = here[: len(here) - node.level + 1] if node.level else []
            targets = [([*base, *(node.module.split(".") if node.module else [])], [a.name for a in node.names])]
        for parts, members in targets:
            if not parts or parts[0] != os.path.basename(root):
                continue
            subs = [f for f in (_module_file(root, [*parts[1:], m]) for m in members) if f]
            found.update(subs)  # `from pkg import submodule` depends on the submodule,
            own = _module_file(root, parts[1:])
            if own and len(subs) < max(len(members), 1):
                found.add(own)  # and on pkg itself only for names defined there
    return tuple(sorted(found))


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def source_stamp(py_file: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The cache stamp of a kernel module: sha256 of its source and of every package module it imports.

    The package is the folder above this one (``ruvattn``); paths in the stamp are relative to
    it, so the stamp depends on content only, never on where the tree is or when it was written.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(py_file)))
    todo, seen = [os.path.abspath(py_file)], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += _imports(path, *_stat(path), root)
    return "sha256", tuple((os.path.relpath(p, root), _digest(p, *_stat(p))) for p in sorted(seen))


def _kernel_locator(base: type, name: str) -> type:
    """A subclass of numba's locator ``base`` that answers for this folder only, with :func:`source_stamp`."""

    class Locator(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if os.path.dirname(os.path.abspath(py_file)) != _HERE:
                return None
            self = super().from_function(py_func, py_file)
            if self is not None:
                self.ruvattn_source = py_file
            return self

        def get_source_stamp(self) -> Any:
            return source_stamp(self.ruvattn_source)

    Locator.__name__ = Locator.__qualname__ = name
    Locator.__module__ = __name__
    return Locator


def _numba_class(caching: Any, name: str) -> type | None:
    """``name`` in numba's caching module, public (numba >= 0.62) or with a leading underscore (0.59-0.61)."""
    return getattr(caching, name, None) or getattr(caching, "_" + name, None)


def _make_locators() -> tuple[type, ...]:
    try:
        from numba.core import caching
    except ImportError:
        return ()
    names = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
    bases = [_numba_class(caching, n) for n in names]
    if not all(isinstance(b, type) for b in bases):
        return ()
    ours = ("KernelCacheDirLocator", "KernelInTreeLocator", "KernelUserWideLocator")
    return tuple(_kernel_locator(b, n) for b, n in zip(bases, ours, strict=True))


#: The kernel locators, most preferred first (empty when this Numba lacks the classes to subclass).
LOCATORS: tuple[type, ...] = _make_locators()
if len(LOCATORS) == 3:
    KernelCacheDirLocator, KernelInTreeLocator, KernelUserWideLocator = LOCATORS


def _probe() -> None:
    """A function of this folder: numba's cache machinery must give it one of :data:`LOCATORS`."""


def _install() -> str:
    """Put :data:`LOCATORS` first in numba's list and check numba uses them; ``""`` or why not."""
    if not LOCATORS:
        return "numba.core.caching has no UserProvidedCacheLocator/InTreeCacheLocator/UserWideCacheLocator to extend"
    try:
        from numba.core.caching import CacheImpl, CompileResultCacheImpl

        classes = [c for c in CacheImpl._locator_classes if not getattr(c, "__module__", "") == __name__]
        CacheImpl._locator_classes = [*LOCATORS, *classes]
        locator = CompileResultCacheImpl(_probe).locator
    except Exception as exc:  # any failure of a private hook means: do not trust the cache
        return f"numba's cache locator hook failed ({type(exc).__name__}: {exc})"
    if not isinstance(locator, LOCATORS):
        why = " (NUMBA_CACHE_LOCATOR_CLASSES is set)" if os.environ.get("NUMBA_CACHE_LOCATOR_CLASSES") else ""
        return f"numba picked {type(locator).__name__} for the kernels, not a ruvattn kernel locator{why}"
    if locator.get_source_stamp() != source_stamp(__file__):
        return "numba's locator does not return the ruvattn source stamp"
    return ""


def _guard() -> str:
    """Install the locators when the kernels are cached at all; if that fails, switch caching off, with a warning."""
    if not _config.CACHE or _config.JIT_DISABLED:
        return ""
    problem = _install()
    if problem:
        _config.CACHE = False  # read by the kernel modules when they are imported, after this
        warnings.warn(
            f"ruvattn.kernels: on-disk caching of the Numba kernels is off, because {problem}; "
            "every process compiles them again (slower start, never stale code). "
            "With NUMBA_CACHE_LOCATOR_CLASSES, list ruvattn.kernels.KernelCacheDirLocator, "
            "ruvattn.kernels.KernelInTreeLocator and ruvattn.kernels.KernelUserWideLocator first.",
            RuntimeWarning,
            stacklevel=3,
        )
    return problem


#: Why the kernels are not cached on disk ("" when they are, or when caching is off anyway).
CACHE_PROBLEM: str = _guard()
