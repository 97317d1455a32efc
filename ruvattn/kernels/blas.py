"""Matrix products inside the kernels: the BLAS ``sgemm``/``dgemm`` on strided row-major views.

:func:`gemm` is ``c = alpha * op(a) @ op(b) + beta * c`` for 2-D float32/float64 arrays whose rows
are contiguous (unit stride along the last axis) and may be views into larger tables: a head's
columns of a ``(n, heads * w)`` table, a block of rows of the output.  It calls the BLAS SciPy was
built with (OpenBLAS in SciPy's wheels) through ``numba_xxgemm``, the bridge Numba's own
``np.dot`` and ``np.linalg.pinv`` use, so the machine code caches like any other kernel and needs
no Python call.  What it adds over ``np.dot(a, b, out)`` is what a tiled attention kernel needs:

* ``alpha``: the score scale folded into the product (no pass over the scores to multiply);
* ``beta = 1``: accumulate into ``c`` (the ``P V`` product of a key tile added to the running output
  row block, no temporary and no pass to add it);
* views with any row stride: one head's columns used in place (no packing copy of a table per
  head), and transposed operands (``tb`` for ``Q Kᵀ``, ``ta`` for the backward products
  ``dSᵀ Q`` and ``Pᵀ dO``) without a copy.

As in the BLAS, ``beta = 0`` does not read ``c`` (NaN there is overwritten, not propagated).

Row-major to column-major: the BLAS sees a row-major ``(r, n)`` array with row stride ``ld`` as
the column-major ``(n, r)`` array with leading dimension ``ld``, so ``C = op(A) op(B)`` is
computed as ``Cᵀ = op(B)ᵀ op(A)ᵀ``: the operands swapped, each one's transpose flag kept.

With ``NUMBA_DISABLE_JIT`` (the coverage run) :func:`gemm` is the same formula in numpy.
"""

from __future__ import annotations

import importlib

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ruvattn._config import JIT_DISABLED

__all__ = ["gemm"]

_N = ord("N")
_T = ord("T")

if JIT_DISABLED:

    def gemm(ta, tb, alpha, a, b, beta, c):
        """``c = alpha * op(a) @ op(b) + beta * c`` (``op(x) = x.T`` when its flag is set); numpy twin."""
        p = (a.T if ta else a) @ (b.T if tb else b)
        if beta == 0:
            c[...] = alpha * p
        else:
            c[...] = alpha * p + beta * c
        return 0

else:
    importlib.import_module("scipy.linalg.cython_blas")  # the BLAS numba_xxgemm resolves on its first call

    _I8 = ir.IntType(8)
    _VOIDP = ir.IntType(8).as_pointer()

    @intrinsic
    def gemm(typingctx, ta, tb, alpha, a, b, beta, c):
        """``c = alpha * op(a) @ op(b) + beta * c`` (``op(x) = x.T`` when its flag is set) by the BLAS.

        ``a``, ``b``, ``c``: 2-D arrays of one float dtype, unit stride along their last axis (any row
        stride); returns the bridge's status (0).
        """
        arrays = (a, b, c)
        if not all(isinstance(x, types.Array) and x.ndim == 2 for x in arrays):
            return None
        dt = a.dtype
        if dt not in (types.float32, types.float64) or b.dtype != dt or c.dtype != dt:
            return None
        sig = types.intc(ta, tb, alpha, a, b, beta, c)
        kind = ord("s") if dt == types.float32 else ord("d")
        itemsize = dt.bitwidth // 8

        def codegen(context, builder, signature, args):
            ta_v, tb_v, alpha_v, a_v, b_v, beta_v, c_v = args
            intp = context.get_value_type(types.intp)
            one = ir.Constant(intp, 1)
            size = ir.Constant(intp, itemsize)

            def parts(ty, val):
                arr = context.make_array(ty)(context, builder, val)
                rows, cols = cgutils.unpack_tuple(builder, arr.shape, 2)
                stride = builder.sdiv(cgutils.unpack_tuple(builder, arr.strides, 2)[0], size)
                # a leading dimension the BLAS accepts for any view: >= the row length and >= 1
                ld = builder.select(builder.icmp_signed(">", stride, cols), stride, cols)
                ld = builder.select(builder.icmp_signed(">", ld, one), ld, one)
                return rows, cols, ld, builder.bitcast(arr.data, _VOIDP)

            a_rows, a_cols, lda, pa = parts(a, a_v)
            _, _, ldb, pb = parts(b, b_v)
            c_rows, c_cols, ldc, pc = parts(c, c_v)
            ta_b = context.cast(builder, ta_v, signature.args[0], types.boolean)
            tb_b = context.cast(builder, tb_v, signature.args[1], types.boolean)
            inner = builder.select(ta_b, a_rows, a_cols)
            flag_a = builder.select(ta_b, ir.Constant(_I8, _T), ir.Constant(_I8, _N))
            flag_b = builder.select(tb_b, ir.Constant(_I8, _T), ir.Constant(_I8, _N))
            alpha_slot = cgutils.alloca_once_value(builder, context.cast(builder, alpha_v, signature.args[2], dt))
            beta_slot = cgutils.alloca_once_value(builder, context.cast(builder, beta_v, signature.args[5], dt))
            fnty = ir.FunctionType(
                ir.IntType(32),
                [_I8, _I8, _I8, intp, intp, intp, _VOIDP, _VOIDP, intp, _VOIDP, intp, _VOIDP, _VOIDP, intp],
            )
            fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
            return builder.call(
                fn,
                (
                    ir.Constant(_I8, kind),
                    flag_b,
                    flag_a,
                    c_cols,
                    c_rows,
                    inner,
                    builder.bitcast(alpha_slot, _VOIDP),
                    pb,
                    ldb,
                    pa,
                    lda,
                    builder.bitcast(beta_slot, _VOIDP),
                    pc,
                    ldc,
                ),
            )

        return sig, codegen
