"""The kernel cache locator (:mod:`ruvattn.kernels`): stamps by content, and the guard around numba's hook.

The end-to-end tests run fresh processes on a temporary package laid out like ``ruvattn``: this
package's real ``_config.py`` and ``kernels/__init__.py``, a tiny ``kernels/attention.py`` with an
inlined helper, and ``kernels/sibling.py`` whose cached kernel calls it, so only the
locator under test decides whether an edit of ``attention.py`` reaches the sibling's cache.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import pytest
from numba.extending import is_jitted

import ruvattn
from ruvattn import _config
from ruvattn import kernels as KC

PACKAGE = Path(ruvattn.__file__).parent
KERNELS = PACKAGE / "kernels"
SIBLINGS = sorted(p.name for p in KERNELS.glob("*.py") if p.name not in {"__init__.py", "attention.py"})
#: The kernel modules built on attention.py's primitives (not blas.py, the BLAS bridge tiles.py and linear.py call).
USERS = [name for name in SIBLINGS if name != "blas.py"]

needs_jit = pytest.mark.skipif(_config.JIT_DISABLED, reason="nothing is compiled or cached with NUMBA_DISABLE_JIT=1")


def _copy_tree(dest: Path) -> Path:
    """A copy of the package's kernel folder and ``_config.py`` (with an empty package ``__init__``)."""
    root = dest / "ruvattn"
    (root / "kernels").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    shutil.copy(PACKAGE / "_config.py", root / "_config.py")
    for p in KERNELS.glob("*.py"):
        shutil.copy(p, root / "kernels" / p.name)
    return root


def _stamps(root: Path) -> dict[str, tuple]:
    return {name: KC.source_stamp(str(root / "kernels" / name)) for name in [*SIBLINGS, "attention.py"]}


def test_stamp_covers_shared_module_and_flags_not_unrelated_files():
    assert SIBLINGS, "no kernel module besides attention.py?"
    # what each kernel module imports from the package: attention.py (the primitives), blas.py (the products)
    shared = {"blas.py": [], "tiles.py": ["attention.py", "blas.py"], "linear.py": ["attention.py", "blas.py"]}
    for name in SIBLINGS:
        files = [path for path, _ in KC.source_stamp(str(KERNELS / name))[1]]
        deps = {name, *shared.get(name, ["attention.py"])}
        assert files == sorted(["_config.py", *(os.path.join("kernels", f) for f in deps)])
    # attention.py imports only _config (the errors module imported inside a _config function is not a dependency)
    files = [path for path, _ in KC.source_stamp(str(KERNELS / "attention.py"))[1]]
    assert files == ["_config.py", os.path.join("kernels", "attention.py")]


def test_stamp_is_content_not_mtime_or_place(tmp_path):
    root = _copy_tree(tmp_path)
    before = _stamps(root)
    assert before == _stamps(PACKAGE)  # another checkout of the same sources: the same stamp
    later = os.stat(root / "kernels" / "attention.py").st_mtime + 3600
    for p in [*root.rglob("*.py")]:
        os.utime(p, (later, later))  # what a fresh checkout does: every mtime new
    assert _stamps(root) == before
    with open(root / "kernels" / "attention.py", "a") as f:
        f.write("# one more line\n")
    after = _stamps(root)
    assert all(after[name] != before[name] for name in after if name != "blas.py"), (
        "an edit of attention.py must reach every kernel"
    )
    assert after["blas.py"] == before["blas.py"]
    with open(root / "kernels" / "blas.py", "a") as f:
        f.write("# one more line\n")
    bridged = _stamps(root)
    assert {n for n in bridged if bridged[n] != after[n]} == {"blas.py", "linear.py", "tiles.py"}  # they call gemm
    with open(root / "kernels" / USERS[0], "a") as f:
        f.write("# one more line\n")
    again = _stamps(root)
    assert again[USERS[0]] != bridged[USERS[0]]
    assert all(again[n] == bridged[n] for n in again if n != USERS[0]), "siblings do not depend on each other"
    with open(root / "_config.py", "a") as f:
        f.write("# the fastmath flags live here\n")
    assert all(v != again[n] for n, v in _stamps(root).items())


def test_stamp_follows_relative_and_package_imports(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "kernels" / "rel.py").write_text("from . import attention\nfrom .. import _config\n")
    (root / "helpers.py").write_text("X = 1\n")
    (root / "__init__.py").write_text("Y = 2\n")
    (root / "kernels" / "pkg.py").write_text(
        "import numpy\nfrom ruvattn import Y\nfrom ruvattn.helpers import X\n\n\ndef f():\n    import ruvattn.errors\n"
    )
    files = [path for path, _ in KC.source_stamp(str(root / "kernels" / "rel.py"))[1]]
    assert files == sorted(["_config.py", os.path.join("kernels", "attention.py"), os.path.join("kernels", "rel.py")])
    files = [path for path, _ in KC.source_stamp(str(root / "kernels" / "pkg.py"))[1]]
    assert files == ["__init__.py", "helpers.py", os.path.join("kernels", "pkg.py")]


@needs_jit
def test_real_kernels_use_the_kernel_locator():
    from numba.core.caching import CompileResultCacheImpl

    from ruvattn.kernels import attention as K

    assert _config.CACHE == _config._env_flag("RUVATTN_NUMBA_CACHE", True)
    if not _config.CACHE:
        pytest.skip("RUVATTN_NUMBA_CACHE=0")
    assert KC.CACHE_PROBLEM == ""
    locator = CompileResultCacheImpl(K.matvec.py_func).locator
    assert isinstance(locator, KC.LOCATORS)
    assert locator.get_source_stamp() == KC.source_stamp(K.__file__)
    shared = (os.path.join("kernels", "attention.py"), KC.source_stamp(K.__file__)[1][1][1])
    for name in USERS:  # one cached kernel of every sibling module: its stamp holds attention.py's hash
        module = importlib.import_module(f"ruvattn.kernels.{name[:-3]}")
        kernel = next(f for f in vars(module).values() if is_jitted(f) and f.py_func.__module__ == module.__name__)
        locator = CompileResultCacheImpl(kernel.py_func).locator
        assert isinstance(locator, KC.LOCATORS) and shared in locator.get_source_stamp()[1], name


@pytest.fixture
def locator_list(monkeypatch):
    """numba's locator list, restored after the test (``_install`` rewrites it)."""
    from numba.core.caching import CacheImpl

    monkeypatch.setattr(CacheImpl, "_locator_classes", list(CacheImpl._locator_classes))
    return CacheImpl


def test_install_puts_the_kernel_locators_first_once(locator_list):
    assert KC._install() == "" and KC._install() == ""
    assert locator_list._locator_classes[:3] == list(KC.LOCATORS)
    assert sum(c.__module__ == KC.__name__ for c in locator_list._locator_classes) == 3
    for locator in KC.LOCATORS:  # they answer for the kernels folder only
        assert locator.from_function(_copy_tree, __file__) is None


def _unusable(case, monkeypatch):
    from numba.core import caching

    if case == "no classes to extend":
        monkeypatch.setattr(KC, "LOCATORS", ())
    elif case == "the variable names other classes":
        if not hasattr(numba.config, "CACHE_LOCATOR_CLASSES"):
            pytest.skip("numba < 0.62 has no NUMBA_CACHE_LOCATOR_CLASSES")
        monkeypatch.setenv("NUMBA_CACHE_LOCATOR_CLASSES", "UserProvidedCacheLocator,InTreeCacheLocator")
        monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "UserProvidedCacheLocator,InTreeCacheLocator")
    elif case == "numba's machinery raises":

        def broken(py_func):
            raise RuntimeError("no locator")

        monkeypatch.setattr(caching, "CompileResultCacheImpl", broken)
    else:  # a numba whose locators no longer ask get_source_stamp of the class that defines it
        for locator in KC.LOCATORS:
            monkeypatch.setattr(locator, "get_source_stamp", lambda self: (0.0, 0))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no classes to extend", "numba.core.caching has no UserProvidedCacheLocator"),
        ("the variable names other classes", "numba picked UserProvidedCacheLocator for the kernels, not a ruvattn "
         "kernel locator (NUMBA_CACHE_LOCATOR_CLASSES is set)"),
        ("numba's machinery raises", "numba's cache locator hook failed (RuntimeError: no locator)"),
        ("another stamp", "does not return the ruvattn source stamp"),
    ],
)  # fmt: skip
def test_install_says_why_the_hook_cannot_be_used(locator_list, monkeypatch, case, message):
    _unusable(case, monkeypatch)
    assert message in KC._install()


def test_guard_switches_the_cache_off_with_a_warning(locator_list, monkeypatch):
    monkeypatch.setattr(_config, "JIT_DISABLED", False)
    monkeypatch.setattr(_config, "CACHE", True)
    _unusable("no classes to extend", monkeypatch)
    with pytest.warns(RuntimeWarning, match="caching of the Numba kernels is off, because numba.core.caching has no"):
        assert "has no UserProvidedCacheLocator" in KC._guard()
    assert _config.CACHE is False  # the kernel modules imported after this compile without a cache
    monkeypatch.setattr(KC, "_install", lambda: pytest.fail("not called when caching is off anyway"))
    assert KC._guard() == ""
    monkeypatch.setattr(_config, "CACHE", True)
    monkeypatch.setattr(_config, "JIT_DISABLED", True)
    assert KC._guard() == ""


SHARED = """\
from numba import njit

from ruvattn._config import CACHE

_serial = njit(cache=CACHE)
_inline = njit(cache=CACHE, inline="always")


@_inline
def shift(x):
    return x + {step}
"""

SIBLING = """\
from ruvattn.kernels.attention import _serial, shift


@_serial
def twice(x):
    return 2.0 * shift(x)
"""

RUN = """\
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import numba.core.caching
    {before}
    import ruvattn.kernels as KC
    from ruvattn import _config
    from ruvattn.kernels.sibling import twice
value = twice(1.0)
stats = twice.stats
print(json.dumps({{"value": value, "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
                  "cache": _config.CACHE, "problem": KC.CACHE_PROBLEM, "warnings": [str(w.message) for w in caught]}}))
"""


def _package(tmp_path: Path, step: float = 1.0) -> Path:
    root = tmp_path / "ruvattn"
    (root / "kernels").mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("")
    shutil.copy(PACKAGE / "_config.py", root / "_config.py")
    shutil.copy(KERNELS / "__init__.py", root / "kernels" / "__init__.py")
    (root / "kernels" / "attention.py").write_text(SHARED.format(step=step))
    (root / "kernels" / "sibling.py").write_text(SIBLING)
    return root


def _run(tmp_path: Path, before: str = "", **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "RUVATTN_", "PYTHON"))}
    clean.update(PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"), **env)
    proc = subprocess.run([sys.executable, "-c", RUN.format(before=before)], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_jit
def test_cache_survives_touch_and_an_edit_of_the_shared_module_recompiles(tmp_path):
    root = _package(tmp_path)
    first = _run(tmp_path)
    assert (first["value"], first["misses"], first["hits"], first["problem"]) == (4.0, 1, 0, "")
    assert _run(tmp_path)["hits"] == 1  # loaded from the cache
    later = os.stat(root / "kernels" / "attention.py").st_mtime + 3600
    for p in root.rglob("*.py"):
        os.utime(p, (later, later))  # a fresh checkout: new mtimes, same bytes
    touched = _run(tmp_path)
    assert (touched["value"], touched["hits"]) == (4.0, 1)
    # sibling.py is unchanged; only the helper it inlines is. Numba alone would load 4.0 here.
    (root / "kernels" / "attention.py").write_text(SHARED.format(step=2.0))
    edited = _run(tmp_path)
    assert (edited["value"], edited["misses"], edited["hits"]) == (6.0, 1, 0)


NUMBA_CLASSES = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
# a numba release without the classes to extend (0.59-0.61 spell them with a leading underscore: drop both)
DROP = "; ".join(f"numba.core.caching.__dict__.pop({p + n!r}, None)" for n in NUMBA_CLASSES for p in ("", "_"))
ONLY_NUMBAS = {"NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator,InTreeCacheLocator"}
CASES = {
    "env names numba's classes only": ("", ONLY_NUMBAS, "NUMBA_CACHE_LOCATOR_CLASSES is set"),
    "numba without the classes": (DROP, {}, "has no UserProvidedCacheLocator"),
}


@needs_jit
@pytest.mark.parametrize("case", sorted(CASES))
def test_without_the_hook_the_kernels_are_compiled_not_cached(tmp_path, case):
    before, env, problem = CASES[case]
    _package(tmp_path)
    first, second = _run(tmp_path, before, **env), _run(tmp_path, before, **env)
    assert problem in first["problem"] and first["cache"] is False and first["value"] == 4.0, first
    assert len(first["warnings"]) == 1 and "caching of the Numba kernels is off" in first["warnings"][0]
    assert second["hits"] == 0 and second["value"] == 4.0  # compiled again
    assert not any((tmp_path / "cache").rglob("*.nbi")), "nothing may be written to the cache"


@needs_jit
def test_numba_cache_locator_classes_naming_the_kernel_locators_keeps_the_cache(tmp_path):
    _package(tmp_path)
    names = "ruvattn.kernels.KernelCacheDirLocator,ruvattn.kernels.KernelInTreeLocator,UserProvidedCacheLocator"
    first, second = _run(tmp_path, NUMBA_CACHE_LOCATOR_CLASSES=names), _run(tmp_path, NUMBA_CACHE_LOCATOR_CLASSES=names)
    assert (first["problem"], first["cache"], first["warnings"], second["hits"]) == ("", True, [], 1)


RACY = """
import time
from numba.core import caching
from ruvattn._config import kernel_njit, LockedFunctionCache

_save_index = caching.IndexDataCacheFile._save_index


def slow_save_index(self, overloads):  # widen the window between choosing a data file name and saving the index
    time.sleep(float({pause!r}))
    _save_index(self, overloads)


caching.IndexDataCacheFile._save_index = slow_save_index


@kernel_njit(cache=True)
def plus_one(x):
    return x + 1
"""

RACER = """
import json, sys
import racy
x = {"int": 1, "float": 1.5}[sys.argv[1]]
print(json.dumps({"value": racy.plus_one(x), "locked": type(racy.plus_one._cache).__name__}))
"""

CHECK = """
import json
import racy
index = racy.plus_one._cache._cache_file._load_index()
print(json.dumps({"int": racy.plus_one(1), "float": racy.plus_one(1.5), "entries": len(index),
                  "hits": sum(racy.plus_one.stats.cache_hits.values())}))
"""


@needs_jit
def test_two_processes_compiling_one_kernel_at_once_keep_both_signatures(tmp_path):
    """Two processes compile different signatures of one cached kernel at the same moment (each holds the
    index for a second between choosing a data file name and writing the index).  Unlocked, both choose
    file 1, and a third process loads one signature's machine code for the other; locked, the saves take
    turns and the third process loads both, right."""
    if not _config.CACHE:
        pytest.skip("RUVATTN_NUMBA_CACHE=0")
    (tmp_path / "racy.py").write_text(RACY.format(pause=1.0))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHON"))}
    clean.update(PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    racers = [subprocess.Popen([sys.executable, "-c", RACER, kind], cwd=tmp_path, env=clean, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for kind in ("int", "float")]  # fmt: skip
    results = []
    for proc in racers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results == [{"value": 2, "locked": "LockedFunctionCache"}, {"value": 2.5, "locked": "LockedFunctionCache"}]
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=clean, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"int": 2, "float": 2.5, "entries": 2, "hits": 2}
