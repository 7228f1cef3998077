"""The ``@triton.jit`` kernels of ``similarity_as_points`` and their helpers (private; the
launchers in ``sasp.ops.triton.similarity_as_points`` call them). Importing this module imports
Triton; ``TRITON_INTERPRET=1`` must be set before it is first imported for the kernels to run
on CPU tensors (Triton's interpreter).

Forward, one launch; one program per (<SEG> row, chunk of KC points), batched over rows with
per-row image sizes:
1. selection, recomputed by each program of a row: bilinear down-sampling of the token grid
   (``F.interpolate``'s index and weight arithmetic, including where PyTorch's CPU or CUDA
   kernel fuses multiply-adds, so that the grid is bit-identical to the torch path's on the
   same device), min-max normalisation (IEEE division), signed padding / cropping,
   thresholds, and the order of ``select_points`` as 64-bit keys (category, value bits, flat
   index) put in order by ``tl.sort`` (or, in the interpreter, by counting smaller keys); the
   first K become the discrete points and labels, (0, 0) / -1 pad rows with fewer cells;
2. DtoC on a (2r+1)^2 window around each of the program's points: the composed interpolation
   is separable, so a window value is a 4 x 4-tap gather from the row's N_p similarities
   (min-max normalised on the fly); softmax with -d^2 logits over the in-image pixels of the
   window; the refined point is the weighted mean offset. The row's non-finite count is
   written for the caller's NaN/Inf check.
Backward, one launch; one program per (row, chunk of KCH points): the window softmax's
gradient G, pulled back to the token grid through dense per-point interpolation matrices with
two ``tl.dot``s (dL/ds_n = sum_k A_k^T G_k B_k); the row's last program to finish adds the
partial sums in chunk order and applies the min-max backward (ties of min / max share the
gradient evenly, like ``amin`` / ``amax``). Deterministic: no floating-point atomics.

Per-row parameters (``params_ptr``, int32 [M, 8]): H, W, selection pad (h, w), DtoC pad (h, w),
the bits of float32(H / gh) and float32(W / gw) (built by the entry point's ``_row_params``).
"""
from __future__ import annotations

import triton
import triton.language as tl

INTERPRETED = bool(triton.knobs.runtime.interpret)
"""True when the kernels below were defined under TRITON_INTERPRET=1 (they then run on CPU)."""

ARITH_CPU, ARITH_CUDA = 0, 1
"""Values of the forward kernel's ``ARITH``: whose ``F.interpolate`` arithmetic the selection
grid reproduces (PyTorch's CPU kernel or its CUDA kernel)."""


@triton.jit
def _fma32(a, b, c):
    """fma(a, b, c) of float32 tensors: a * b is exact in float64, the sum is rounded to float64
    and then to float32 (a double rounding, which differs from one rounding only when the
    float64 sum lands on a float32 tie: about 2^-29 of random cases)."""
    return (a.to(tl.float64) * b.to(tl.float64) + c.to(tl.float64)).to(tl.float32)


@triton.jit
def _down_axis(dst, n_in, n_out, scale):
    """F.interpolate's (align_corners=False) source taps (i0, i1, l0, l1) of output cells ``dst``.

    ``scale`` is float(n_in) / n_out in float32; the source index is fma(scale, dst + 0.5, -0.5)
    as PyTorch's compiled kernels compute it. Equal sizes copy (PyTorch's special case).
    """
    half = (dst.to(tl.float32) + 0.5).to(tl.float64)
    src = (scale.to(tl.float64) * half - 0.5).to(tl.float32)
    src = tl.maximum(src, 0.0)
    i0 = tl.minimum(tl.floor(src).to(tl.int32), n_in - 1)
    l1 = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
    i1 = i0 + (i0 < n_in - 1).to(tl.int32)
    copy = n_in == n_out
    i0 = tl.where(copy, dst, i0)
    i1 = tl.where(copy, dst, i1)
    l1 = tl.where(copy, 0.0, l1)
    return i0, i1, 1.0 - l1, l1


@triton.jit
def _selection_values(s_row, f, cell, rows, cols, dh, dw, scale_h, scale_w, ARITH: tl.constexpr):
    """The down-sampled (bilinear) token grid at flat cells f (where ``cell``), bit-identical
    to F.interpolate on the same device."""
    r = tl.where(cell, f // dw, 0)
    c = tl.where(cell, f % dw, 0)
    y0, y1, h0, h1 = _down_axis(r, rows, dh, scale_h)
    x0, x1, w0, w1 = _down_axis(c, cols, dw, scale_w)
    v00 = tl.load(s_row + y0 * cols + x0, mask=cell, other=0.0).to(tl.float32)
    v01 = tl.load(s_row + y0 * cols + x1, mask=cell, other=0.0).to(tl.float32)
    v10 = tl.load(s_row + y1 * cols + x0, mask=cell, other=0.0).to(tl.float32)
    v11 = tl.load(s_row + y1 * cols + x1, mask=cell, other=0.0).to(tl.float32)
    if ARITH == 0:  # ARITH_CPU
        # CPU: h0*w0*v00 + h0*w1*v01 + h1*w0*v10 + h1*w1*v11, contracted left to right
        acc = _fma32(h0 * w0, v00, (h0 * w1) * v01)
        acc = _fma32(h1 * w0, v10, acc)
        acc = _fma32(h1 * w1, v11, acc)
    else:
        # CUDA: h0 * (w0*v00 + w1*v01) + h1 * (w0*v10 + w1*v11), contracted by nvcc
        top = _fma32(w0, v00, w1 * v01)
        bot = _fma32(w0, v10, w1 * v11)
        acc = _fma32(h0, top, h1 * bot)
    return acc


@triton.jit
def _cell_keys(g, f, cell, dh, dw, spad_h, spad_w, gmin, gspan, t_pos, t_neg):
    """Sort keys of select_points' order for flat cells f with down-sampled values g.

    Order: category (positive, negative, neutral, none), then value (positives descending,
    negatives ascending), then flat index. Key = category << 51 | value bits << 20 | index:
    normalised values are >= +0, so their float32 bits are monotone in the value.
    Returns (int64 keys, int32 categories 0..3).
    """
    live = (tl.zeros_like(g) + gspan) != 0.0  # a constant grid normalises to zeros: all neutral
    g = tl.where(live, tl.div_rn(g - gmin, tl.where(live, gspan, 1.0)), 0.0)
    gr = f // dw + spad_h
    gc = f % dw + spad_w
    valid = cell & (gr >= 0) & (gr < dh + 2 * spad_h) & (gc >= 0) & (gc < dw + 2 * spad_w)
    pos = valid & live & (g >= t_pos)
    neg = valid & live & (g >= 0.0) & (g <= t_neg)
    cat = tl.where(pos, 0, tl.where(neg, 1, tl.where(valid, 2, 3)))
    bits = g.to(tl.int32, bitcast=True) & 0x7FFFFFFF  # -0.0 (a -0 at a +0 minimum) orders as +0.0
    fkey = tl.where(pos, 0x7FFFFFFF - bits, tl.where(neg, bits, 0))
    key = (cat.to(tl.int64) << 51) | (fkey.to(tl.int64) << 20) | f.to(tl.int64)
    return key, cat


@triton.jit
def _outer_taps(i, wi, pad, mid, n, n_over_mid):
    """The two token-grid taps (j0, w0), (j1, w1) of cell i of the padded mid-sized map."""
    q = i - pad
    inside = (q >= 0) & (q < mid)
    q = tl.minimum(tl.maximum(q, 0), mid - 1)
    src = tl.maximum((q.to(tl.float64) + 0.5) * n_over_mid - 0.5, 0.0)
    j0 = tl.minimum(tl.floor(src).to(tl.int32), n - 1)
    j1 = tl.minimum(j0 + 1, n - 1)
    l2 = src - j0.to(tl.float64)
    wi = tl.where(inside, wi, 0.0)
    return j0, (wi * (1.0 - l2)).to(tl.float32), j1, (wi * l2).to(tl.float32)


@triton.jit
def _axis_taps(pix, size, pad, mid, n):
    """Composed DtoC interpolation along one axis: pixel -> (pad, mid-sized map) -> n cells.

    Integer pixels ``pix`` (inside [0, size)) of an axis of ``size`` pixels; the image axis is
    bilinear from the padded axis (mid + 2 * pad cells), whose cell q - pad is bilinear from
    the n token cells (zero in the padding). Float64 index arithmetic, as ``sasp.ops.dtoc``.
    Returns four (index, float32 weight) taps.
    """
    padded = mid + 2 * pad
    src = (pix.to(tl.float64) + 0.5) * (padded.to(tl.float64) / size.to(tl.float64)) - 0.5
    src = tl.maximum(src, 0.0)
    i0 = tl.minimum(tl.floor(src).to(tl.int32), padded - 1)
    i1 = tl.minimum(i0 + 1, padded - 1)
    l1 = src - i0.to(tl.float64)
    n_over_mid = n.to(tl.float64) / mid.to(tl.float64)
    ja, wa, jb, wb = _outer_taps(i0, 1.0 - l1, pad, mid, n, n_over_mid)
    jc, wc, jd, wd = _outer_taps(i1, l1, pad, mid, n, n_over_mid)
    return ja, wa, jb, wb, jc, wc, jd, wd


@triton.jit
def _gather_row_taps(acc, s_row, cols, lo, inv, win, jy, wy, jx0, wx0, jx1, wx1, jx2, wx2, jx3, wx3):
    """acc += sum over the 4 column taps of wy * wx * minmax(s)[jy, jx] on [KC, RB, RB] windows."""
    base = s_row + jy[:, :, None] * cols
    wyb = wy[:, :, None]
    w = wyb * wx0[:, None, :]
    v = tl.load(base + jx0[:, None, :], mask=win & (w != 0.0), other=0.0).to(tl.float32)
    acc += w * ((v - lo) * inv)
    w = wyb * wx1[:, None, :]
    v = tl.load(base + jx1[:, None, :], mask=win & (w != 0.0), other=0.0).to(tl.float32)
    acc += w * ((v - lo) * inv)
    w = wyb * wx2[:, None, :]
    v = tl.load(base + jx2[:, None, :], mask=win & (w != 0.0), other=0.0).to(tl.float32)
    acc += w * ((v - lo) * inv)
    w = wyb * wx3[:, None, :]
    v = tl.load(base + jx3[:, None, :], mask=win & (w != 0.0), other=0.0).to(tl.float32)
    acc += w * ((v - lo) * inv)
    return acc


@triton.jit
def _row_stats(s_row, n_p, NP_B: tl.constexpr):
    """min, max, 1 / (max - min) (0 for a constant row) and the number of non-finite values
    of the row's N_p similarities."""
    offs = tl.arange(0, NP_B)
    m = offs < n_p
    s = tl.load(s_row + offs, mask=m, other=0.0).to(tl.float32)
    bad = tl.sum((m & ((s != s) | (tl.abs(s) == float("inf")))).to(tl.int32), 0)
    lo = tl.min(tl.where(m, s, float("inf")), 0)
    hi = tl.max(tl.where(m, s, float("-inf")), 0)
    span = hi - lo
    inv = tl.where(span > 0.0, 1.0 / tl.where(span > 0.0, span, 1.0), 0.0)
    return lo, hi, inv, bad


@triton.jit
def _load_row_params(prm):
    h = tl.load(prm + 0)
    w = tl.load(prm + 1)
    dpad_h = tl.load(prm + 4)
    dpad_w = tl.load(prm + 5)
    return h, w, dpad_h, dpad_w


@triton.jit
def _windows(s_row, px, py, kmask, h, w, dpad_h, dpad_w, rows, cols, ch, cw, lo, inv,
             R: tl.constexpr, RB: tl.constexpr):
    """DtoC's unnormalised softmax weights on the windows of KC points.

    Returns a tuple: e [KC, RB, RB] (exp(S - d^2) on the in-image pixels of each window, 0
    elsewhere; axis 1 is y, axis 2 is x), the window offsets [RB] (float32; -R..R, then
    padding), then the four (index, weight) taps of the rows [KC, RB] and of the columns.
    """
    o = tl.arange(0, RB)
    in_win = o < 2 * R + 1
    off = o - R
    ys = py[:, None] + off[None, :]  # [KC, RB]
    xs = px[:, None] + off[None, :]
    in_y = kmask[:, None] & in_win[None, :] & (ys >= 0) & (ys < h)
    in_x = kmask[:, None] & in_win[None, :] & (xs >= 0) & (xs < w)
    ys = tl.minimum(tl.maximum(ys, 0), h - 1)
    xs = tl.minimum(tl.maximum(xs, 0), w - 1)
    ya, wya, yb, wyb, yc, wyc, yd, wyd = _axis_taps(ys, h, dpad_h, ch, rows)
    xa, wxa, xb, wxb, xc, wxc, xd, wxd = _axis_taps(xs, w, dpad_w, cw, cols)
    win = in_y[:, :, None] & in_x[:, None, :]  # [KC, RB, RB]
    s_win = tl.zeros(win.shape, dtype=tl.float32)
    for t in range(4):  # a loop, not unrolled: four gathers in flight at a time bound the registers
        jy = tl.where(t == 0, ya, tl.where(t == 1, yb, tl.where(t == 2, yc, yd)))
        wy = tl.where(t == 0, wya, tl.where(t == 1, wyb, tl.where(t == 2, wyc, wyd)))
        s_win = _gather_row_taps(s_win, s_row, cols, lo, inv, win, jy, wy, xa, wxa, xb, wxb, xc, wxc, xd, wxd)
    offf = off.to(tl.float32)
    d2 = offf[None, :, None] * offf[None, :, None] + offf[None, None, :] * offf[None, None, :]
    e = tl.where(win, tl.exp(s_win - d2), 0.0)
    return (e, offf, ya, wya, yb, wyb, yc, wyc, yd, wyd, xa, wxa, xb, wxb, xc, wxc, xd, wxd)


@triton.jit
def _window_means(s_row, pts, kmask, h, w, dpad_h, dpad_w, rows, cols, ch, cw, lo, inv,
                  R: tl.constexpr, RB: tl.constexpr):
    """Load KC points (x, y) at ``pts`` and return them, their windows (``_windows``), the
    softmax normalisers z [KC] and the mean offsets mx, my [KC] (DtoC's shift)."""
    px = tl.load(pts, mask=kmask, other=0).to(tl.int32)
    py = tl.load(pts + 1, mask=kmask, other=0).to(tl.int32)
    win = _windows(s_row, px, py, kmask, h, w, dpad_h, dpad_w, rows, cols, ch, cw, lo, inv, R, RB)
    e = win[0]
    off = win[1]
    z = tl.sum(tl.sum(e, 2), 1)
    z = tl.where(z > 0.0, z, 1.0)
    mx = tl.sum(tl.sum(e * off[None, None, :], 2), 1) / z
    my = tl.sum(tl.sum(e * off[None, :, None], 2), 1) / z
    return px, py, win, z, mx, my


@triton.jit(do_not_specialize=["n_p", "rows", "cols", "dh", "dw", "ch", "cw", "K"])
def _similarity_as_points_fwd_kernel(
    sim_ptr, params_ptr, refined_ptr, labels_ptr, discrete_ptr, bad_ptr,
    n_p, rows, cols, dh, dw, ch, cw, K,
    scale_h, scale_w, t_pos, t_neg,
    R: tl.constexpr, RB: tl.constexpr, KC: tl.constexpr, NP_B: tl.constexpr, CELL_B: tl.constexpr,
    CJ: tl.constexpr, SORT: tl.constexpr, ARITH: tl.constexpr,
):
    # scalars as tensors (the interpreter passes floats, the compiler specialises ints == 1)
    rows, cols, dh, dw = tl.cast(rows, tl.int32), tl.cast(cols, tl.int32), tl.cast(dh, tl.int32), tl.cast(dw, tl.int32)
    ch, cw, n_p, K = tl.cast(ch, tl.int32), tl.cast(cw, tl.int32), tl.cast(n_p, tl.int32), tl.cast(K, tl.int32)
    scale_h, scale_w = tl.cast(scale_h, tl.float32), tl.cast(scale_w, tl.float32)
    t_pos, t_neg = tl.cast(t_pos, tl.float32), tl.cast(t_neg, tl.float32)
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    s_row = sim_ptr + row * n_p
    prm = params_ptr + row * 8
    h, w, dpad_h, dpad_w = _load_row_params(prm)
    spad_h = tl.load(prm + 2)
    spad_w = tl.load(prm + 3)
    cell_h = tl.load(prm + 6).to(tl.float32, bitcast=True)  # float32(H / gh)
    cell_w = tl.load(prm + 7).to(tl.float32, bitcast=True)  # float32(W / gw)

    # ---- selection: the down-sampled, normalised grid and the order of its cells ----
    ncell = dh * dw
    f = tl.arange(0, CELL_B)
    cell = f < ncell
    g = _selection_values(s_row, f, cell, rows, cols, dh, dw, scale_h, scale_w, ARITH)
    gmin = tl.min(tl.where(cell, g, float("inf")), 0)
    gspan = tl.max(tl.where(cell, g, float("-inf")), 0) - gmin
    key, cat = _cell_keys(g, f, cell, dh, dw, spad_h, spad_w, gmin, gspan, t_pos, t_neg)
    if SORT:
        # slot f holds the f-th smallest key; lanes past the cells sort last (category 3,
        # index >= ncell)
        key = tl.sort(key)
        ci = (key & 0xFFFFF).to(tl.int32)
        cat = (key >> 51).to(tl.int32)
        slot = f
    else:
        # the slot of a cell = its rank = the number of cells with a smaller key
        ci = f
        slot = tl.zeros((CELL_B,), dtype=tl.int32)
        for j0 in range(0, ncell, CJ):
            fj = j0 + tl.arange(0, CJ)
            cj = fj < ncell
            gj = _selection_values(s_row, fj, cj, rows, cols, dh, dw, scale_h, scale_w, ARITH)
            kj, _ = _cell_keys(gj, fj, cj, dh, dw, spad_h, spad_w, gmin, gspan, t_pos, t_neg)
            slot += tl.sum(((kj[None, :] < key[:, None]) & cj[None, :]).to(tl.int32), 1)
    real = cat < 3
    x = (((ci % dw) + spad_w).to(tl.float32) + 0.5) * cell_w
    y = (((ci // dw) + spad_h).to(tl.float32) + 0.5) * cell_h
    x = tl.where(real, tl.minimum(x, (w - 1).to(tl.float32)).to(tl.int64), 0)
    y = tl.where(real, tl.minimum(y, (h - 1).to(tl.float32)).to(tl.int64), 0)
    label = tl.where(cat == 0, 1, tl.where(cat == 1, 0, -1)).to(tl.int64)
    keep = cell & (slot < K)
    out = row * K + slot
    tl.store(discrete_ptr + out * 2, x, mask=keep)
    tl.store(discrete_ptr + out * 2 + 1, y, mask=keep)
    if chunk == 0:
        tl.store(labels_ptr + out, label, mask=keep)
    # fewer cells than K: the remaining slots are "not a point", (0, 0) with label -1
    for s0 in range(ncell, K, 64):
        rest = s0 + tl.arange(0, 64)
        pad = rest < K
        tl.store(discrete_ptr + (row * K + rest) * 2, tl.zeros((64,), dtype=tl.int64), mask=pad)
        tl.store(discrete_ptr + (row * K + rest) * 2 + 1, tl.zeros((64,), dtype=tl.int64), mask=pad)
        tl.store(labels_ptr + row * K + rest, tl.full((64,), -1, dtype=tl.int64), mask=pad)
    tl.debug_barrier()  # the points are read back below, in the layout of this chunk

    # ---- DtoC on the windows of this program's KC points ----
    lo, hi, inv, bad = _row_stats(s_row, n_p, NP_B)
    if chunk == 0:
        tl.store(bad_ptr + row, bad)
    k = chunk * KC + tl.arange(0, KC)
    kmask = k < K
    px, py, win, z, mx, my = _window_means(
        s_row, discrete_ptr + (row * K + k) * 2, kmask, h, w, dpad_h, dpad_w, rows, cols, ch, cw, lo, inv, R, RB
    )
    dst = refined_ptr + (row * K + k) * 2
    tl.store(dst, px.to(tl.float32) + mx, mask=kmask)
    tl.store(dst + 1, py.to(tl.float32) + my, mask=kmask)


@triton.jit
def _dense_taps(ja, wa, jb, wb, jc, wc, jd, wd, N_B: tl.constexpr):
    """Dense [KC, RB, N_B] interpolation matrix from four (index, weight) taps [KC, RB]."""
    n = tl.arange(0, N_B)[None, None, :]
    dense = tl.where(ja[:, :, None] == n, wa[:, :, None], 0.0)
    dense += tl.where(jb[:, :, None] == n, wb[:, :, None], 0.0)
    dense += tl.where(jc[:, :, None] == n, wc[:, :, None], 0.0)
    dense += tl.where(jd[:, :, None] == n, wd[:, :, None], 0.0)
    return dense


@triton.jit(do_not_specialize=["n_p", "rows", "cols", "ch", "cw", "K"])
def _similarity_as_points_bwd_kernel(
    sim_ptr, params_ptr, discrete_ptr, grad_ptr, grad_sim_ptr, part_ptr, count_ptr,
    n_p, rows, cols, ch, cw, K,
    R: tl.constexpr, RB: tl.constexpr, KC: tl.constexpr, KCH: tl.constexpr, NP_B: tl.constexpr,
    ROWS_B: tl.constexpr, COLS_B: tl.constexpr,
):
    rows, cols, ch, cw = tl.cast(rows, tl.int32), tl.cast(cols, tl.int32), tl.cast(ch, tl.int32), tl.cast(cw, tl.int32)
    n_p, K = tl.cast(n_p, tl.int32), tl.cast(K, tl.int32)
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    n_chunks = tl.num_programs(1)
    s_row = sim_ptr + row * n_p
    h, w, dpad_h, dpad_w = _load_row_params(params_ptr + row * 8)
    lo, hi, inv, _ = _row_stats(s_row, n_p, NP_B)

    # this program's KCH points: dL/d minmax(s) = sum over points of A_k^T G_k B_k
    dsn = tl.zeros((ROWS_B, COLS_B), dtype=tl.float32)
    k_end = tl.minimum(chunk * KCH + KCH, K)
    for k0 in range(chunk * KCH, k_end, KC):
        k = k0 + tl.arange(0, KC)
        kmask = k < k_end
        px, py, win, z, mx, my = _window_means(
            s_row, discrete_ptr + (row * K + k) * 2, kmask, h, w, dpad_h, dpad_w, rows, cols, ch, cw, lo, inv, R, RB
        )
        e = win[0]
        off = win[1]
        gp = grad_ptr + (row * K + k) * 2
        gx = tl.load(gp, mask=kmask, other=0.0).to(tl.float32)
        gy = tl.load(gp + 1, mask=kmask, other=0.0).to(tl.float32)
        # refined = p + sum softmax * offset  =>  dL/dS = softmax * (g . (offset - mean offset))
        dev_x = off[None, None, :] - mx[:, None, None]
        dev_y = off[None, :, None] - my[:, None, None]
        gs = e / z[:, None, None] * (gx[:, None, None] * dev_x + gy[:, None, None] * dev_y)
        a = _dense_taps(win[2], win[3], win[4], win[5], win[6], win[7], win[8], win[9], ROWS_B)
        b = _dense_taps(win[10], win[11], win[12], win[13], win[14], win[15], win[16], win[17], COLS_B)
        u = tl.dot(gs, b, input_precision="ieee")  # [KC, RB, COLS_B]
        a2 = tl.reshape(a, (KC * RB, ROWS_B))
        u2 = tl.reshape(u, (KC * RB, COLS_B))
        dsn += tl.dot(tl.trans(a2), u2, input_precision="ieee")

    # the row's programs leave their partial sums; the last to finish adds them up in chunk
    # order (deterministic) and applies the min-max backward
    ra = tl.arange(0, ROWS_B)[:, None]
    cb = tl.arange(0, COLS_B)[None, :]
    parts = part_ptr + row * n_chunks * (ROWS_B * COLS_B) + ra * COLS_B + cb
    tl.store(parts + chunk * (ROWS_B * COLS_B), dsn)
    tl.debug_barrier()  # every thread's partial is written before the count goes up
    if tl.atomic_add(count_ptr + row, 1) == n_chunks - 1:  # acq_rel: the others' partials are visible
        dsn = tl.zeros((ROWS_B, COLS_B), dtype=tl.float32)
        for c in range(0, n_chunks):
            dsn += tl.load(parts + c * (ROWS_B * COLS_B), cache_modifier=".cg")
        # through the min-max normalisation: s_n = (s - lo) / (hi - lo)
        m2 = (ra < rows) & (cb < cols)
        s2 = tl.load(s_row + ra * cols + cb, mask=m2, other=0.0).to(tl.float32)
        sn = (s2 - lo) * inv
        dsn = tl.where(m2, dsn, 0.0)
        d_lo = tl.sum(tl.sum(dsn * (sn - 1.0), 1), 0) * inv
        d_hi = -tl.sum(tl.sum(dsn * sn, 1), 0) * inv
        is_lo = m2 & (s2 == lo)
        is_hi = m2 & (s2 == hi)
        n_lo = tl.sum(tl.sum(is_lo.to(tl.float32), 1), 0)
        n_hi = tl.sum(tl.sum(is_hi.to(tl.float32), 1), 0)
        ds = dsn * inv
        ds += tl.where(is_lo, d_lo / tl.maximum(n_lo, 1.0), 0.0)
        ds += tl.where(is_hi, d_hi / tl.maximum(n_hi, 1.0), 0.0)
        ds = tl.where(inv > 0.0, ds, 0.0)  # constant row: minmax gives zeros, no gradient
        tl.store(grad_sim_ptr + row * n_p + ra * cols + cb, ds, mask=m2)
