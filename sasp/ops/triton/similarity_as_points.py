"""Launchers, autograd and the custom op of the fused ``similarity_as_points`` kernels:
selection + DtoC forward in one launch, DtoC backward in one (the kernels and how they compute
are in ``sasp.ops.triton.similarity_as_points_kernels``).

Importing this module imports Triton and registers the ``sasp::similarity_as_points`` custom
op (and its backward, ``sasp::similarity_as_points_backward``); ``sasp.ops.triton`` imports
it lazily.

Layers, top to bottom: the plain launchers ``similarity_as_points_forward`` /
``similarity_as_points_backward`` (block sizes in ``forward_meta`` / ``backward_meta``);
``SimilarityAsPointsFunction`` (autograd.Function, the eager path) and the custom op
``similarity_as_points_op`` with its fake implementation and autograd formula (what
``torch.compile`` traces); ``similarity_as_points_triton``, with the contract of
``sasp.ops.similarity_as_points``.

Limits (checked by ``sasp.ops.triton.kernel_limits``; the dispatcher falls back to the torch
path beyond them): token grid at most 64 x 64, dtoc_radius at most 15, num_points at most
4096. At the launchers' block sizes neither kernel spills registers on sm_90 (see
tests/test_triton.py::test_kernels_compile_for_sm90_without_spills).
"""
from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
import triton
from torch import Tensor
from torch.autograd.function import once_differentiable

from ...config import SasPConfig
from ...geometry import ImageSizes, grid_padding, grid_shape, image_sizes
from .._common import check_sim, nonfinite_row
from ..dtoc import crop_shape
from ..select import selection_shape
from ..similarity_as_points import SasPOutput
from . import kernel_limits
from .similarity_as_points_kernels import (
    ARITH_CPU,
    ARITH_CUDA,
    INTERPRETED,
    _similarity_as_points_bwd_kernel,
    _similarity_as_points_fwd_kernel,
)

# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _window_block(radius: int) -> int:
    return max(16, _next_pow2(2 * radius + 1))


# Block sizes. Registers bound them on a GPU (sm_90, ptxas -v: no spills at these sizes);
# the interpreter (numpy with a per-op overhead) prefers few, large steps.


SORT_IN_INTERPRETER_UP_TO = 64
"""The order of the cells is one ``tl.sort`` on a GPU; the interpreter's sort is slow, so it
ranks cells by pairwise comparison instead, except for grids up to this many cells (so that the
tests exercise the sort path too)."""


def _use_sort(cell_b: int) -> bool:
    return not INTERPRETED or cell_b <= SORT_IN_INTERPRETER_UP_TO


def _rank_chunk(cell_b: int) -> int:
    """Cells compared per step of the rank loop ([cell_b, CJ] keys at a time)."""
    return cell_b if INTERPRETED else max(1, 2048 // cell_b)


def _fwd_chunk(rb: int) -> int:
    """Points per forward program ([KC, RB, RB] windows)."""
    return max(1, (8192 if INTERPRETED else 2048) // (rb * rb))


def _bwd_chunk(rb: int, rows_b: int, cols_b: int) -> int:
    """Points per step of the backward loop ([KC, RB, max(RB, rows, cols)] dense taps)."""
    return max(1, (16384 if INTERPRETED else 2048) // (rb * max(rb, rows_b, cols_b)))


def _on_device(t: Tensor):
    """Triton launches on the current CUDA device: make it ``t``'s."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


@functools.lru_cache(maxsize=64)
def forward_meta(n_p: int, rows: int, cols: int, down_sample: int, radius: int, device_type: str):
    """Compile-time constants and launch options of the forward kernel for these sizes (cached:
    the dicts are shared, read-only)."""
    dh, dw = rows // down_sample, cols // down_sample
    rb = _window_block(radius)
    cell_b = _next_pow2(dh * dw) if INTERPRETED else max(256, _next_pow2(dh * dw))  # fewer compilations
    constexprs = dict(
        R=radius, RB=rb, KC=_fwd_chunk(rb), NP_B=max(1024, _next_pow2(n_p)), CELL_B=cell_b,
        CJ=_rank_chunk(cell_b), SORT=_use_sort(cell_b), ARITH=ARITH_CUDA if device_type == "cuda" else ARITH_CPU,
    )
    # no fp contraction: the selection grid reproduces PyTorch's roundings exactly
    return constexprs, dict(num_warps=4, num_stages=1, enable_fp_fusion=False)


@functools.lru_cache(maxsize=64)
def backward_meta(n_p: int, rows: int, cols: int, radius: int):
    """Compile-time constants and launch options of the backward kernel for these sizes (cached:
    the dicts are shared, read-only)."""
    rb = _window_block(radius)
    rows_b, cols_b = max(32, _next_pow2(rows)), max(32, _next_pow2(cols))
    kc = _bwd_chunk(rb, rows_b, cols_b)
    constexprs = dict(R=radius, RB=rb, KC=kc, KCH=kc if INTERPRETED else 2 * kc, NP_B=max(1024, _next_pow2(n_p)),
                      ROWS_B=rows_b, COLS_B=cols_b)
    return constexprs, dict(num_warps=8, num_stages=1)


def similarity_as_points_forward(
    sim: Tensor, params: Tensor, rows: int, cols: int, num_points: int, t_pos: float, t_neg: float,
    down_sample: int, crop_h: int, crop_w: int, radius: int,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Launch the forward kernel. sim [M, N_p] contiguous, params [M, 8] int32 (``_row_params``).

    Returns refined [M, K, 2] float32, labels [M, K] int64, discrete [M, K, 2] int64 and the
    number of non-finite similarities of each row [M] int32 (the outputs of such rows are
    meaningless).
    """
    m, n_p = sim.shape
    k = num_points
    refined = torch.empty((m, k, 2), dtype=torch.float32, device=sim.device)
    labels = torch.empty((m, k), dtype=torch.int64, device=sim.device)
    discrete = torch.empty((m, k, 2), dtype=torch.int64, device=sim.device)
    bad = torch.empty((m,), dtype=torch.int32, device=sim.device)
    if m == 0:
        return refined, labels, discrete, bad
    dh, dw = rows // down_sample, cols // down_sample
    scale_h = float(np.float32(rows) / np.float32(dh))  # F.interpolate's float(in) / out, in float32
    scale_w = float(np.float32(cols) / np.float32(dw))
    constexprs, options = forward_meta(n_p, rows, cols, down_sample, radius, sim.device.type)
    with _on_device(sim):
        _similarity_as_points_fwd_kernel[(m, triton.cdiv(k, constexprs["KC"]))](
            sim, params, refined, labels, discrete, bad,
            n_p, rows, cols, dh, dw, crop_h, crop_w, k,
            scale_h, scale_w, t_pos, t_neg,
            **constexprs, **options,
        )
    return refined, labels, discrete, bad


def similarity_as_points_backward(
    grad: Tensor, sim: Tensor, params: Tensor, discrete: Tensor, rows: int, cols: int,
    crop_h: int, crop_w: int, radius: int,
) -> Tensor:
    """Launch the backward kernel: dL/d refined [M, K, 2] -> dL/d sim [M, N_p] (sim's dtype)."""
    m, n_p = sim.shape
    grad_sim = torch.empty_like(sim)
    if m == 0 or discrete.shape[1] == 0:
        return grad_sim.zero_()
    grad = grad.to(torch.float32).contiguous()
    k = discrete.shape[1]
    constexprs, options = backward_meta(n_p, rows, cols, radius)
    n_chunks = triton.cdiv(k, constexprs["KCH"])
    parts = torch.empty((m, n_chunks, constexprs["ROWS_B"] * constexprs["COLS_B"]), dtype=torch.float32, device=sim.device)
    count = torch.zeros((m,), dtype=torch.int32, device=sim.device)
    with _on_device(sim):
        _similarity_as_points_bwd_kernel[(m, n_chunks)](
            sim, params, discrete, grad, grad_sim, parts, count,
            n_p, rows, cols, crop_h, crop_w, k,
            **constexprs, **options,
        )
    return grad_sim


# --------------------------------------------------------------------------------------------
# autograd.Function (eager) and custom op (torch.compile traces it through its fake)
# --------------------------------------------------------------------------------------------


class _Geometry(NamedTuple):
    """The sizes the backward launcher needs besides its tensors."""

    rows: int  # token grid rows
    cols: int  # token grid columns
    crop_h: int  # DtoC's intermediate map size (crop_shape)
    crop_w: int
    radius: int  # dtoc_radius


class SimilarityAsPointsFunction(torch.autograd.Function):
    """Selection + DtoC with the fused kernels; gradient into ``sim`` through ``refined``."""

    @staticmethod
    def forward(ctx, sim, params, rows, cols, num_points, t_pos, t_neg, down_sample, crop_h, crop_w, radius):
        out = similarity_as_points_forward(sim, params, rows, cols, num_points, t_pos, t_neg, down_sample, crop_h, crop_w, radius)
        ctx.mark_non_differentiable(*out[1:])
        ctx.save_for_backward(sim, params, out[2])
        ctx.meta = _Geometry(rows, cols, crop_h, crop_w, radius)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_refined, *_):
        sim, params, discrete = ctx.saved_tensors
        return (similarity_as_points_backward(grad_refined, sim, params, discrete, *ctx.meta),) + (None,) * 10


@torch.library.custom_op("sasp::similarity_as_points", mutates_args=())
def similarity_as_points_op(
    sim: Tensor, params: Tensor, rows: int, cols: int, num_points: int, t_pos: float, t_neg: float,
    down_sample: int, crop_h: int, crop_w: int, radius: int,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """SasP selection + DtoC: refined [M, K, 2] f32, labels [M, K] i64, discrete [M, K, 2] i64,
    non-finite count per row [M] i32."""
    return similarity_as_points_forward(
        sim.contiguous(), params.contiguous(), rows, cols, num_points, t_pos, t_neg,
        down_sample, crop_h, crop_w, radius,
    )


@similarity_as_points_op.register_fake
def _similarity_as_points_fake(sim, params, rows, cols, num_points, t_pos, t_neg, down_sample, crop_h, crop_w, radius):
    m = sim.shape[0]
    return (
        sim.new_empty((m, num_points, 2), dtype=torch.float32),
        sim.new_empty((m, num_points), dtype=torch.int64),
        sim.new_empty((m, num_points, 2), dtype=torch.int64),
        sim.new_empty((m,), dtype=torch.int32),
    )


@torch.library.custom_op("sasp::similarity_as_points_backward", mutates_args=())
def similarity_as_points_backward_op(
    grad: Tensor, sim: Tensor, params: Tensor, discrete: Tensor, rows: int, cols: int,
    crop_h: int, crop_w: int, radius: int,
) -> Tensor:
    """dL/d sim [M, N_p] from dL/d refined [M, K, 2] of ``sasp::similarity_as_points``."""
    return similarity_as_points_backward(
        grad, sim.contiguous(), params.contiguous(), discrete.contiguous(), rows, cols, crop_h, crop_w, radius
    )


@similarity_as_points_backward_op.register_fake
def _similarity_as_points_backward_fake(grad, sim, params, discrete, rows, cols, crop_h, crop_w, radius):
    return torch.empty_like(sim)


def _setup_context(ctx, inputs, output) -> None:
    sim, params, rows, cols, _, _, _, _, crop_h, crop_w, radius = inputs
    ctx.save_for_backward(sim, params, output[2])
    ctx.meta = _Geometry(rows, cols, crop_h, crop_w, radius)


def _backward(ctx, grad_refined, *_):
    sim, params, discrete = ctx.saved_tensors
    if grad_refined is None:
        grad_sim = torch.zeros_like(sim)
    else:
        grad_sim = torch.ops.sasp.similarity_as_points_backward(grad_refined, sim, params, discrete, *ctx.meta)
    return (grad_sim,) + (None,) * 10


similarity_as_points_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------
# Functional entry point
# --------------------------------------------------------------------------------------------


def _row_params(hw: Tensor, sel_grid: Tuple[int, int], crop_grid: Tuple[int, int], geometry: str) -> Tensor:
    """Per-row int32 parameters [M, 8] from the geometry (float64 host arithmetic, as the torch
    path): H, W, selection pad (h, w), DtoC pad (h, w), bits of float32(H / gh), float32(W / gw)."""
    sel_pad = grid_padding(hw, sel_grid, geometry)
    gsize = torch.tensor(sel_grid) + 2 * sel_pad
    cell = (hw.to(torch.float64) / gsize.to(torch.float64)).to(torch.float32)
    dtoc_pad = grid_padding(hw, crop_grid, geometry)
    ints = torch.cat([hw, sel_pad, dtoc_pad], 1).to(torch.int32)
    return torch.cat([ints, cell.view(torch.int32)], 1).contiguous()


@functools.lru_cache(maxsize=256)
def _row_params_cached(key: Tuple[Tuple[int, int], ...], sel_grid, crop_grid, geometry: str, device: str) -> Tensor:
    hw = image_sizes(torch.tensor(key, dtype=torch.int64).view(-1, 2), len(key))  # validates
    return _row_params(hw, sel_grid, crop_grid, geometry).to(device)


def _size_key(image_hw: ImageSizes, m: int) -> Tuple[Tuple[int, int], ...]:
    """Hashable per-row (H, W): straight from a list of int pairs (no tensor round trip),
    otherwise through ``image_sizes`` (which validates and raises)."""
    if isinstance(image_hw, (list, tuple)) and len(image_hw) == m:
        try:
            key = tuple((h, w) for h, w in image_hw)
        except (TypeError, ValueError):
            key = None
        if key is not None and all(type(h) is int and type(w) is int for h, w in key):
            return key
    return tuple(map(tuple, image_sizes(image_hw, m).tolist()))


def similarity_as_points_triton(
    sim: Tensor,
    image_hw: ImageSizes,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
) -> SasPOutput:
    """SasP end to end with the fused kernels: the arguments, results and contract of
    ``sasp.ops.similarity_as_points`` (sim [M, N_p], image_hw [M, 2] -> refined [M, K, 2],
    labels [M, K], discrete [M, K, 2]).

    ``sim`` is a CUDA tensor (or a CPU one under TRITON_INTERPRET=1) of float16, bfloat16,
    float32 or float64; the kernels compute in float32, like the torch path, ``refined`` is
    float32 and the gradient comes back in sim's dtype. With ``cfg.check_finite`` a row holding
    NaN or Inf raises a ValueError naming it (the kernel counts them; one host
    synchronisation); without it the call never synchronises.
    """
    cfg = cfg or SasPConfig()
    check_sim(sim, check_finite=False)
    m = sim.shape[0]
    rows, cols = grid_shape(sim.shape[-1], grid_hw)
    dh, dw = selection_shape((rows, cols), cfg.down_sample)
    reason = kernel_limits(sim, cfg, (rows, cols))
    if reason is not None:
        raise RuntimeError(f"the fused similarity_as_points kernel cannot run: {reason}")
    ch, cw = crop_shape((rows, cols), cfg.crop_size)
    params = _row_params_cached(_size_key(image_hw, m), (dh, dw), (ch, cw), cfg.geometry, str(sim.device))
    # the kernels read float32 (as the torch path computes); other dtypes are cast (and their
    # gradient cast back by autograd), which keeps one compiled variant per block size
    sim32 = sim.to(torch.float32).contiguous()
    args = (sim32, params, rows, cols, cfg.num_points, float(cfg.t_pos), float(cfg.t_neg),
            cfg.down_sample, ch, cw, cfg.dtoc_radius)
    if torch.compiler.is_compiling():
        refined, labels, discrete, bad = torch.ops.sasp.similarity_as_points(*args)
    else:
        refined, labels, discrete, bad = SimilarityAsPointsFunction.apply(*args)
    if cfg.check_finite and m and bool(bad.any()):
        raise nonfinite_row(int(bad.nonzero()[0]))
    return SasPOutput(refined, labels, discrete)
