"""Every registered mechanism against the contract (``tests/contract.py``), and proof that the checks
catch a mechanism that breaks it: a mechanism registered tomorrow is in all of these unedited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ruvattn import ScaledDotProductAttention, available
from ruvattn.compression import QuantizedTable
from ruvattn.mechanisms import base, register
from tests import contract as C

KINDS = available()


def test_every_mechanism_is_registered() -> None:
    assert len(KINDS) == 15, KINDS  # grows with the registry; a new kind needs no edit below


@pytest.mark.parametrize("check", C.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", KINDS)
def test_contract(kind: str, check: Any) -> None:
    check(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_learned_state(kind: str, tmp_path: Path) -> None:
    C.check_state(kind, tmp_path)


@pytest.fixture
def broken() -> Iterator[dict[str, str]]:
    """Register mechanisms that each break one promise; unregister them after the test."""
    kinds: dict[str, str] = {}

    @register("broken_weights")
    class BrokenWeights(ScaledDotProductAttention):
        """Weights that do not sum to 1."""

        def _weights_one(self, op: str, query: Any, keys: Any, **kwargs: Any) -> Any:
            return 2 * super()._weights_one(op, query, keys, **kwargs)

    @register("broken_mutation")
    class BrokenMutation(ScaledDotProductAttention):
        """A forward that writes into its keys."""

        def forward(self, query: Any, keys: Any, values: Any = None, **kwargs: Any) -> Any:
            out = super().forward(query, keys, values, **kwargs)
            if isinstance(keys, np.ndarray) and keys.flags.writeable:
                keys[0, 0] += 1.0
            return out

    @register("broken_mask")
    class BrokenMask(ScaledDotProductAttention):
        """A mechanism that ignores its mask."""

        def forward(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None, **kwargs: Any) -> Any:
            return super().forward(query, keys, values, **kwargs)

    @register("broken_dtype")
    class BrokenDtype(ScaledDotProductAttention):
        """float32 in, float64 out."""

        def forward(self, query: Any, keys: Any, values: Any = None, **kwargs: Any) -> Any:
            return super().forward(query, keys, values, **kwargs).astype(np.float64)

    @register("broken_codes")
    class BrokenCodes(ScaledDotProductAttention):
        """Reads a quantised table's raw codes as if they were the values (scales forgotten)."""

        def forward(self, query: Any, keys: Any, values: Any = None, **kwargs: Any) -> Any:
            if isinstance(values, QuantizedTable):
                values = values.codes[:, : values.dim].astype(np.float32)
            return super().forward(query, keys, values, **kwargs)

    @register("broken_whole_table")
    class BrokenWholeTable(ScaledDotProductAttention):
        """Claims to read quantised tables but dequantises the whole table for neighbour lists."""

        def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Any:
            if isinstance(keys, QuantizedTable):
                keys, values = keys.dequantize(), values.dequantize()
            return super().forward_neighbours(queries, keys, values, neighbours)

    kinds.update(weights="broken_weights", mutation="broken_mutation", mask="broken_mask", dtype="broken_dtype",
                 codes="broken_codes", whole="broken_whole_table")  # fmt: skip
    try:
        yield kinds
    finally:
        for kind in kinds.values():
            base._REGISTRY.pop(kind, None)


def test_the_checks_fail_for_broken_mechanisms(broken: dict[str, str]) -> None:
    assert set(broken.values()) <= set(available())
    with pytest.raises(AssertionError, match="1"):
        C.check_weights(broken["weights"])
    with pytest.raises(AssertionError, match="mutated"):
        C.check_layouts(broken["mutation"])
    with pytest.raises(AssertionError):
        C.check_masks(broken["mask"])
    with pytest.raises(AssertionError, match="float32 in, float64 out"):
        C.check_dtypes(broken["dtype"])
    with pytest.raises(AssertionError, match="over a quantised table"):
        C.check_quantized_tables(broken["codes"])
    with pytest.raises(AssertionError, match="dequantised a whole table"):
        C.check_quantized_tables(broken["whole"])
    C.check_weights("scaled_dot_product")  # the parent passes
