"""Sparsity patterns as data: which keys each query may attend to, stored as scipy.sparse CSR.

See :class:`SparsityPattern`.  A pattern works with every mechanism: as a dense
keep-mask (``mask=pattern.attention_mask()`` in ``forward_batch``) or, without
ever building the ``(m, n)`` matrix, as a neighbour list
(``forward_neighbours(queries, keys, values, pattern.to_csr())``).
"""

from ruvattn.sparse.patterns import SparsityPattern

__all__ = ["SparsityPattern"]
