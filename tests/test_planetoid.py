"""The Planetoid-layout loader on Cora (its README's counts, PyG's conventions) and on made-up directories:
other sizes, isolated nodes, unlabelled nodes, id:value features, and every kind of malformed file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ruvattn import DimensionMismatch, InvalidConfig, OutOfBounds
from ruvattn.datasets import find_planetoid, load_planetoid

CORA = find_planetoid("cora")
needs_cora = pytest.mark.skipif(
    CORA is None and os.environ.get("CI") != "true", reason="Cora is read from ../shared/data/cora (CI has it)"
)


@needs_cora
def test_cora_matches_its_readme():
    assert CORA is not None, "CI must find ../shared/data/cora"
    d = load_planetoid(CORA)
    s = d.summary()
    assert (s["nodes"], s["edges (directed)"], s["features"], s["classes"]) == (2708, 10556, 1433, 7)
    assert (s["train"], s["val"], s["test"]) == (140, 500, 1000)
    assert np.bincount(d.labels[d.train]).tolist() == [20] * 7  # 20 per class
    # symmetric, no duplicates, no self loops
    a = d.graph
    rows = np.repeat(np.arange(a.num_nodes), a.degrees())
    pairs = set(zip(rows.tolist(), a.indices.tolist(), strict=True))
    assert len(pairs) == a.nnz and all((j, i) in pairs for i, j in pairs) and not any(i == j for i, j in pairs)
    # row-normalised bag of words: each non-empty row sums to 1, entries 1/count
    sums = np.asarray(d.x.sum(1)).ravel()
    np.testing.assert_allclose(sums[d.x.getnnz(1) > 0], 1.0, rtol=1e-6)
    first = Path(CORA, "features.txt").read_text().split("\n")[0].split()
    assert sorted(d.x[0].indices.tolist()) == sorted(int(t) for t in first)
    raw = load_planetoid(CORA, normalize=False)
    assert set(raw.x.data.tolist()) == {1.0}


def _write(root: Path, **files: str) -> Path:
    base = {
        "features.txt": "0 1\n2:0.5 3:1.5\n\n1\n4\n",
        "labels.txt": "0\n1\n-1\n2\n0\n",
        "edges.txt": "0 1\n1 3\n3 1\n1 0\n",
        "train.txt": "0 1\n",
        "val.txt": "3\n",
        "test.txt": "4 2\n",
    }
    base.update(files)
    root.mkdir(parents=True, exist_ok=True)
    for name, text in base.items():
        if text is not None:
            (root / name).write_text(text)
    return root


def test_other_dataset_shapes_isolated_and_unlabelled_nodes(tmp_path):
    d = load_planetoid(_write(tmp_path), labelled_test=False)
    assert d.num_nodes == 5 and d.num_features == 5 and d.num_classes == 3
    np.testing.assert_allclose(d.x.toarray()[1], [0, 0, 0.25, 0.75, 0])  # id:value, row-normalised
    assert d.x.toarray()[2].tolist() == [0] * 5  # a node without features
    assert d.labels.tolist() == [0, 1, -1, 2, 0]
    assert d.graph.indptr.tolist() == [0, 1, 3, 3, 4, 4]  # duplicates and both orientations merged
    assert d.graph.indices.tolist() == [1, 0, 3, 1]
    assert d.summary()["isolated"] == 2 and d.summary()["unlabelled"] == 1
    assert load_planetoid(tmp_path, num_features=9, labelled_test=False).num_features == 9


@pytest.mark.parametrize(
    "files, error, match",
    [
        ({"labels.txt": "0\n1\n"}, DimensionMismatch, "2 labels for 5 nodes"),
        ({"labels.txt": "0\n1\n-2\n2\n0\n"}, OutOfBounds, "-1 marks no label"),
        ({"labels.txt": "0\nx\n1\n2\n0\n"}, InvalidConfig, "integer labels"),
        ({"edges.txt": "0 1\n1\n"}, DimensionMismatch, "pairs"),
        ({"edges.txt": "0 9\n"}, OutOfBounds, "node 9"),
        ({"features.txt": "0 a\n\n\n\n\n"}, InvalidConfig, "line 1"),
        ({"features.txt": "0 -1\n\n\n\n\n"}, OutOfBounds, "negative"),
        ({"features.txt": "0:nan\n\n\n\n\n"}, InvalidConfig, "NaN"),
        ({"train.txt": "0 7"}, OutOfBounds, "train.txt holds node 7"),
        ({"train.txt": "0 0"}, InvalidConfig, "twice"),
        ({"train.txt": "0 2"}, InvalidConfig, "no label"),
        ({"val.txt": "0"}, InvalidConfig, "both train.txt and val.txt"),
        ({"test.txt": None}, InvalidConfig, "missing"),
    ],
)  # fmt: skip
def test_malformed_files_are_named(tmp_path, files, error, match):
    with pytest.raises(error, match=match):
        load_planetoid(_write(tmp_path, **files), labelled_test=False)


def test_labelled_test_is_the_default(tmp_path):
    with pytest.raises(InvalidConfig, match=r"test\.txt holds node 2, which has no label"):
        load_planetoid(_write(tmp_path))


def test_num_features_below_the_largest_id_is_refused(tmp_path):
    with pytest.raises(OutOfBounds, match="num_features=3"):
        load_planetoid(_write(tmp_path), num_features=3, labelled_test=False)
