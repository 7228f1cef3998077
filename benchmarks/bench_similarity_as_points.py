"""similarity_as_points (selection + DtoC) per provider against its literal reference,
forward / backward / both, side by side in one run.

    python benchmarks/bench_similarity_as_points.py              # full table (a few minutes on 2 CPU cores)
    python benchmarks/bench_similarity_as_points.py --quick      # two sizes, one reference run each
    python benchmarks/bench_similarity_as_points.py --threads 4  # torch threads (default 2)
    python benchmarks/bench_similarity_as_points.py --device cuda  # + the Triton kernel (GPU)

Providers:
  reference  similarity_as_points_ref: select_points_ref then dtoc_ref per row (full H x W
             maps); timed at batch 1, scaled by the batch
  torch      similarity_as_points on the torch path (SASP_BACKEND=torch)
  triton     the fused kernel, similarity_as_points_triton (GPU only; what SASP_BACKEND=triton
             and the automatic choice on CUDA run), including its one host synchronisation
             for the NaN/Inf check
  triton-nc  the same with check_finite=False: no host synchronisation at all (GPU only)
  kernels    the two launchers alone, the kernels' own time without the Python wrapper (GPU only)
Prints median and spread per case (CPU: torch.utils.benchmark.Timer, blocked_autorange;
CUDA: triton.testing.do_bench), extra memory per <SEG> (CPU: total bytes allocated, an upper
bound on the peak; CUDA: the allocator's peak), the speed-up against the reference measured
in the same run, and the targets: fwd+bwd per <SEG> at 1080x1920 >= 1000x faster than the
reference, <= 1 MB extra memory per <SEG>, 64 <SEG>s in one call <= 8x one <SEG> (and on a
GPU: 64 <SEG>s at 1080x1920 fwd+bwd <= 100 us and >= 5x the torch path, set for an H100).
Appends one CSV row per measurement (machine, versions, date, commit) to benchmarks/out/.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Provider, autograd_passes, extra_bytes, run  # noqa: E402

from sasp import SasPConfig, similarity_as_points, similarity_as_points_ref  # noqa: E402

CFG = SasPConfig()  # READ-7B: K = 30, down_sample 2, N_p = 576
KEY = (1080, 1920)
GPU_TARGET = (100.0, 5.0)  # 64 <SEG>s at 1080x1920, fwd+bwd: budget in us, speed-up over the torch path


def _kernels(sim, hw):
    """The launchers alone (no validation, no autograd)."""
    from sasp.ops.triton import similarity_as_points as kernels  # the module (imports Triton)
    from sasp.ops.dtoc import crop_shape

    rows = cols = 24
    dh, dw = rows // CFG.down_sample, cols // CFG.down_sample
    ch, cw = crop_shape((rows, cols), CFG.crop_size)
    params = kernels._row_params_cached(tuple(hw), (dh, dw), (ch, cw), CFG.geometry, str(sim.device))
    x = sim.detach()

    def fwd():
        return kernels.similarity_as_points_forward(x, params, rows, cols, CFG.num_points, CFG.t_pos, CFG.t_neg,
                                                    CFG.down_sample, ch, cw, CFG.dtoc_radius)

    discrete = fwd()[2]
    grad = torch.ones(x.shape[0], CFG.num_points, 2, device=x.device)

    def bwd():
        return kernels.similarity_as_points_backward(grad, x, params, discrete, rows, cols, ch, cw, CFG.dtoc_radius)

    def full():
        out = fwd()
        return kernels.similarity_as_points_backward(grad, x, params, out[2], rows, cols, ch, cw, CFG.dtoc_radius)

    return {"fwd": fwd, "bwd": bwd, "full": full}


def providers(args):
    def triton_op(cfg):
        from sasp.ops.triton import similarity_as_points_triton

        return lambda sim, hw: autograd_passes(lambda: similarity_as_points_triton(sim, hw, cfg).refined, sim)

    table = {
        "reference": Provider("reference", lambda sim, hw: autograd_passes(lambda: similarity_as_points_ref(sim, hw, CFG).refined, sim), per_row=True),
        "torch": Provider("torch", lambda sim, hw: autograd_passes(lambda: similarity_as_points(sim, hw, CFG).refined, sim)),
    }
    gpu = args.device == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"  # (the interpreter: a smoke run)
    if gpu:
        table["triton"] = Provider("triton", triton_op(CFG))
        table["triton-nc"] = Provider("triton-nc", triton_op(CFG.replace(check_finite=False)))
        table["kernels"] = Provider("kernels", _kernels)
    names = args.providers or list(table)
    unknown = set(names) - set(table)
    if unknown:
        raise SystemExit(f"unknown or unavailable providers {sorted(unknown)} (on {args.device}: {', '.join(table)})")
    return [table["reference"]] + [table[n] for n in table if n in names and n != "reference"]


def arithmetic_probe(device: str = "cuda") -> str:
    """Does the kernel's emulation of CUDA's bilinear arithmetic match F.interpolate bit for bit?"""
    def fma(a, b, c):
        return (a.double() * b.double() + c.double()).float()

    def taps(n_in, n_out):
        scale = torch.tensor(np.float32(n_in) / np.float32(n_out), device=device)
        d = torch.arange(n_out, device=device, dtype=torch.float32)
        src = fma(scale, d + 0.5, torch.tensor(-0.5, device=device)).clamp(min=0)
        i0 = src.floor().long().clamp(max=n_in - 1)
        l1 = (src - i0.float()).clamp(0, 1)
        return i0, torch.where(i0 < n_in - 1, i0 + 1, i0), 1 - l1, l1

    total = same = 0
    for rows, cols, dh, dw in [(23, 23, 11, 11), (24, 24, 5, 5), (17, 31, 8, 15), (24, 24, 12, 12), (64, 64, 21, 21)]:
        x = torch.randn(8, rows, cols, device=device)
        ref = F.interpolate(x[:, None], (dh, dw), mode="bilinear", align_corners=False)[:, 0]
        y0, y1, h0, h1 = taps(rows, dh)
        x0, x1, w0, w1 = taps(cols, dw)
        h0, h1, w0, w1 = h0[:, None], h1[:, None], w0[None], w1[None]
        v = lambda yy, xx: x[:, yy[:, None], xx[None, :]]  # noqa: E731
        out = fma(h0, fma(w0, v(y0, x0), w1 * v(y0, x1)), h1 * fma(w0, v(y1, x0), w1 * v(y1, x1)))
        total += out.numel()
        same += int((out == ref).sum())
    return f"{same}/{total} outputs bit-identical"


def main(argv=None) -> int:
    os.environ["SASP_BACKEND"] = "torch"  # the "torch" provider; the triton providers call the kernel directly
    args, stats = run("similarity_as_points", __doc__, providers, ("fwd", "bwd", "full"), argv)
    names = {name for (_, _, name, _) in stats}
    if KEY not in args.sizes or not {1, 64} <= set(args.batches):
        return 0
    print("\nTargets:")
    for name in sorted(names - {"reference", "kernels"}):
        t1, _, _, _, mem1 = stats[(KEY, 1, name, "full")]
        speed1 = stats[(KEY, 1, "reference", "full")][0] / t1
        t64 = stats[(KEY, 64, name, "full")][0]
        big = torch.randn(1, 576, device=args.device, requires_grad=True)
        op = next(p for p in providers(args) if p.name == name).build
        mem_8k = extra_bytes(op(big, [(8000, 8000)])["full"], args.device)
        checks = [
            (f"fwd+bwd per <SEG> at 1080x1920 >= 1000x faster than the reference: {speed1:,.0f}x", speed1 >= 1000),
            (f"extra memory per <SEG> <= 1 MB: {mem1 / 2**20:.3f} MB at 1080x1920, {mem_8k / 2**20:.3f} MB at 8000x8000",
             max(mem1, mem_8k) <= 2**20),
            (f"64 <SEG>s in one call <= 8x one <SEG>: {t64 / t1:.1f}x", t64 <= 8 * t1),
        ]
        if args.device == "cuda" and name == "triton":
            budget, speed = GPU_TARGET
            t_torch = stats[(KEY, 64, "torch", "full")][0] if "torch" in names else float("nan")
            checks += [
                (f"GPU: 64 <SEG>s at 1080x1920 fwd+bwd <= {budget:.0f} us: {t64 * 1e3:.1f} us", t64 * 1e3 <= budget),
                (f"GPU: >= {speed:.0f}x the torch path: {t_torch / t64:.1f}x", t_torch / t64 >= speed),
            ]
        print(f"  {name} (torch.set_num_threads({args.threads})):")
        for text, ok in checks:
            print(f"    [{'PASS' if ok else 'MISS'}] {text}")
    if args.device == "cuda":
        print(f"\nCUDA bilinear arithmetic probe (kernel emulation vs F.interpolate): {arithmetic_probe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
