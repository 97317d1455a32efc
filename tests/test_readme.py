"""README.md cannot drift from the code.

* Every fenced ```` ```python ```` block of the README runs, each in a fresh namespace, from a
  scratch directory.  A block is skipped only when the line before it is a comment
  ``<!-- no-test: why -->`` (the reason is required, and shows in the skip message).
* The mechanisms table between ``<!-- mechanisms-table -->`` and ``<!-- /mechanisms-table -->`` is
  generated from the registry (:func:`mechanisms_table`), so a new, renamed or changed mechanism
  fails this test until the table is regenerated: ``python tests/test_readme.py --write``.
* APIs that were removed do not appear, and every relative link points at a file in the repository
  (``docs/benchmarks.md`` may be absent: ``ruvattn report`` writes it from the experiments' results).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TABLE_START = "<!-- mechanisms-table -->"
TABLE_END = "<!-- /mechanisms-table -->"
#: methods that the mechanism contract replaced (weights() with a head axis covers all three)
REMOVED_APIS = ("attention_weights_batch", "head_attention_weights", "neighbour_weights")
#: files a link may point at before they exist: written by a command, not by hand
GENERATED = {"docs/benchmarks.md"}

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NO_TEST = re.compile(r"<!--\s*no-test:\s*(\S.*?)\s*-->\s*$")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(first line number, source, skip reason or None)`` of each ```` ```python ```` block."""
    blocks = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _NO_TEST.search(before)
        blocks.append((line, m.group(1), marker.group(1) if marker else None))
    return blocks


def _blocks() -> list[Any]:
    return [
        pytest.param(line, src, reason, id=f"README.md:{line}")
        for line, src, reason in python_blocks(README.read_text())
    ]


@pytest.mark.parametrize(("line", "source", "skip_reason"), _blocks())
def test_python_block_runs(line: int, source: str, skip_reason: str | None, tmp_path: Path, monkeypatch: Any) -> None:
    if skip_reason is not None:
        pytest.skip(f"marked no-test in README.md: {skip_reason}")
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    code = compile("\n" * line + source, str(README), "exec")  # tracebacks give README.md's line numbers
    exec(code, {"__name__": "__readme__"})


def test_no_test_markers_say_why() -> None:
    text = README.read_text()
    bare = [ln for ln in text.splitlines() if "no-test" in ln and not _NO_TEST.search(ln)]
    assert not bare, f"a no-test marker needs a reason: <!-- no-test: why -->; got {bare}"
    assert python_blocks(text), "README.md has no python blocks"


# -- the mechanisms table ------------------------------------------------------------------


def _first_sentence(doc: str | None) -> str:
    """The docstring's first sentence in markdown: roles and double backticks become code spans,
    a trailing "(see the module docstring ...)" is dropped."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.sub(r"\s*\(see the module docstring[^)]*\)", "", text)
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    end = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    return (text[: end.start()] if end else text).rstrip(".:; ")


def _state_names(names: list[str]) -> str:
    """Tensor names, grouped by their first component (``out_proj.weight``, ``out_proj.bias`` ->
    ``out_proj.*``); an index becomes ``<i>``."""
    names = [re.sub(r"\.\d+\.", ".<i>.", n) for n in names]
    groups: dict[str, list[str]] = {}
    for n in sorted(set(names)):
        groups.setdefault(n.split(".")[0], []).append(n)
    return ", ".join(f"`{g[0]}`" if len(g) == 1 else f"`{head}.*`" for head, g in groups.items()) or "—"


def _heads(cls: Any) -> str:
    """``H`` of ``weights()``: 1, or the parameter that sets it (found by changing ``heads``)."""
    two, four = cls.example_params(8, heads=2), cls.example_params(8, heads=4)
    if cls(**two).num_weight_heads == cls(**four).num_weight_heads:
        return str(cls(**two).num_weight_heads)
    (name,) = [k for k in two if (two[k], four[k]) == (2, 4)]
    return f"`{name}`"


def mechanisms_table() -> str:
    """The README's table, made from the registry: one row per :func:`ruvattn.available` kind."""
    from ruvattn import available
    from ruvattn.mechanisms import mechanism_class

    rows = [
        "| kind | class | input space | heads *H* | learned or random state | backward | what it is |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in available():
        cls = mechanism_class(kind)
        ex = cls.example(np.float64)
        mech = ex.mechanism
        cells = [
            f"`{kind}`",
            f"`{cls.__name__}`",
            mech.input_space,
            _heads(cls),
            _state_names(list(mech.state_dict())),
            "yes" if cls.supports_backward else "—",
            _first_sentence(cls.__doc__),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _table_span(text: str) -> tuple[int, int]:
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    assert 0 <= start < end, f"README.md needs {TABLE_START} ... {TABLE_END} around the mechanisms table"
    return start + len(TABLE_START), end


def test_mechanisms_table_is_generated() -> None:
    text = README.read_text()
    start, end = _table_span(text)
    assert text[start:end].strip() == mechanisms_table(), (
        "the mechanisms table in README.md differs from the registry; run: python tests/test_readme.py --write"
    )


# -- words and links ----------------------------------------------------------------------


def test_removed_apis_are_not_mentioned() -> None:
    text = README.read_text()
    assert not [name for name in REMOVED_APIS if name in text]


def test_relative_links_exist() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local
    missing = [link for link in local if not (ROOT / link).exists() and link.rstrip("/") not in GENERATED]
    assert not missing, missing


def write_table() -> None:
    """Regenerate the mechanisms table in README.md in place."""
    text = README.read_text()
    start, end = _table_span(text)
    README.write_text(text[:start] + "\n" + mechanisms_table() + "\n" + text[end:])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_table()
    else:
        print(mechanisms_table())
