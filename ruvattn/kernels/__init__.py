"""Numba kernels (see :mod:`ruvattn.kernels.attention`) and the helpers around them."""
