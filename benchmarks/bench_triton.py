"""The fused Triton kernel against the torch path and the literal reference, on CUDA.

    python benchmarks/bench_triton.py                # 1080x1920 and 4000x3000, batch 1 and 64
    python benchmarks/bench_triton.py --quick        # 1080x1920 only, fewer repetitions
    python benchmarks/bench_triton.py --csv out.csv  # where the CSV rows go (default: $OUT or
                                                     # benchmarks/results/bench_triton.csv)
    TRITON_INTERPRET=1 python benchmarks/bench_triton.py --device cpu --sizes 120x160 --batches 1 2 --reps 1
                                                     # smoke run of this script without a GPU

Providers:
  triton     sasp.ops.triton.similarity_as_points_triton (what SASP_BACKEND=triton runs):
             validation, autograd, one launch each way, and the NaN/Inf check (counted by the
             kernel, one host synchronisation)
  triton-nc  the same with check_finite=False: no host synchronisation at all
  kernels    the two launchers alone (fused_points_forward / fused_points_backward): the
             kernels' own time, without the Python wrapper
  torch      the torch path (SASP_BACKEND=torch) on the same CUDA tensors
  reference  select_points_ref + dtoc_ref (literal, full H x W maps), batch 1 only
Passes: fwd (selection + DtoC), bwd (gradient into the similarity, after an untimed forward),
full (both). Times are CUDA-event latencies per call in microseconds (host work included, as
a caller sees it): median and [20th, 80th] percentiles, plus the peak extra GPU memory.
Prints the speed-ups, the issue's target (64 <SEG>s at 1080x1920, fwd+bwd <= 100 us and
>= 5x the torch path, on an H100), a bit-exactness probe of CUDA's bilinear arithmetic, and
appends one CSV row per measurement (machine, GPU, versions, date, commit).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_csv  # noqa: E402

import sasp  # noqa: E402
from sasp import PRESETS, dtoc_ref, select_points_ref  # noqa: E402
from sasp.ops.dispatch import similarity_as_points  # noqa: E402
from sasp.ops.triton import similarity_as_points_triton  # noqa: E402  (imports Triton lazily)

SIZES = [(1080, 1920), (4000, 3000)]
BATCHES = [1, 64]
TARGET = ((1080, 1920), 64, 100.0, 5.0)  # image, batch, fwd+bwd budget in us, speed-up over torch
DEVICE = "cuda"


def cuda_time(fn: Callable[[], object], reps: int, warmup: int = 3) -> Dict[str, float]:
    """Per-call latency in microseconds: median, 20th / 80th percentile, min, max (CUDA
    events; wall clock for the CPU smoke run)."""
    cuda = torch.cuda.is_available() and DEVICE == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times: List[float] = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
    t = np.asarray(times)
    return {"median": float(np.median(t)), "p20": float(np.percentile(t, 20)), "p80": float(np.percentile(t, 80)),
            "min": float(t.min()), "max": float(t.max()), "reps": reps}


def peak_mb(fn: Callable[[], object]) -> float:
    if DEVICE != "cuda":
        fn()
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def providers(cfg):
    """name -> (forward(sim, hw) -> (refined, state), backward(sim, refined, grad, state))."""
    from sasp.ops.triton import sasp_kernel as sk

    def autograd_bwd(sim, out, grad, state):
        return torch.autograd.grad(out, sim, grad, retain_graph=True)

    def triton_fwd(sim, hw):
        return sk.similarity_as_points_triton(sim, hw, cfg)[0], None

    nocheck = cfg.replace(check_finite=False)

    def triton_nc_fwd(sim, hw):
        return sk.similarity_as_points_triton(sim, hw, nocheck)[0], None

    def torch_fwd(sim, hw):
        os.environ["SASP_BACKEND"] = "torch"
        try:
            return similarity_as_points(sim, hw, cfg)[0], None
        finally:
            os.environ.pop("SASP_BACKEND", None)

    def ref_fwd(sim, hw):
        points, _ = select_points_ref(sim, hw, cfg)
        return dtoc_ref(sim, hw, points, cfg), None

    rows = cols = 24
    dh, dw = rows // cfg.down_sample, cols // cfg.down_sample
    ch = cw = cfg.crop_size

    def kernels_fwd(sim, hw):
        hw_t = torch.as_tensor(hw, dtype=torch.int64)
        params = sk._row_params_cached(tuple(map(tuple, hw_t.tolist())), (dh, dw), (ch, cw), cfg.geometry, str(sim.device))
        out = sk.fused_points_forward(sim.detach(), params, rows, cols, cfg.num_points, cfg.t_pos, cfg.t_neg,
                                      cfg.down_sample, ch, cw, cfg.dtoc_radius)
        return out[0], (params, out[2])

    def kernels_bwd(sim, out, grad, state):
        params, discrete = state
        return sk.fused_points_backward(grad, sim.detach(), params, discrete, rows, cols, ch, cw, cfg.dtoc_radius)

    return {
        "triton": (triton_fwd, autograd_bwd),
        "triton-nc": (triton_nc_fwd, autograd_bwd),
        "kernels": (kernels_fwd, kernels_bwd),
        "torch": (torch_fwd, autograd_bwd),
        "reference": (ref_fwd, autograd_bwd),
    }


def measure(fwd, bwd, sim, hw, reps):
    out, state = fwd(sim, hw)
    grad = torch.randn_like(out)
    warm = min(3, reps)
    res = {"fwd": cuda_time(lambda: fwd(sim, hw), reps, warm)}
    res["bwd"] = cuda_time(lambda: bwd(sim, out, grad, state), reps, warm)

    def full():
        o, st = fwd(sim, hw)
        bwd(sim, o, grad, st)

    res["full"] = cuda_time(full, reps, warm)
    res["mem"] = peak_mb(full)
    return res


def arithmetic_probe(device: str = "cuda") -> str:
    """Does the kernel's emulation of CUDA's bilinear arithmetic match F.interpolate bit for bit?"""
    def fma(a, b, c):
        return (a.double() * b.double() + c.double()).float()

    def taps(n_in, n_out, dev):
        scale = torch.tensor(np.float32(n_in) / np.float32(n_out), device=dev)
        d = torch.arange(n_out, device=dev, dtype=torch.float32)
        src = fma(scale, d + 0.5, torch.tensor(-0.5, device=dev)).clamp(min=0)
        i0 = src.floor().long().clamp(max=n_in - 1)
        l1 = (src - i0.float()).clamp(0, 1)
        i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
        return i0, i1, 1 - l1, l1

    total = same = 0
    for rows, cols, dh, dw in [(23, 23, 11, 11), (24, 24, 5, 5), (17, 31, 8, 15), (24, 24, 12, 12), (64, 64, 21, 21)]:
        x = torch.randn(8, rows, cols, device=device)
        ref = F.interpolate(x[:, None], (dh, dw), mode="bilinear", align_corners=False)[:, 0]
        y0, y1, h0, h1 = taps(rows, dh, device)
        x0, x1, w0, w1 = taps(cols, dw, device)
        h0, h1, w0, w1 = h0[:, None], h1[:, None], w0[None], w1[None]
        v = lambda yy, xx: x[:, yy[:, None], xx[None, :]]  # noqa: E731
        top = fma(w0, v(y0, x0), w1 * v(y0, x1))
        bot = fma(w0, v(y1, x0), w1 * v(y1, x1))
        out = fma(h0, top, h1 * bot)
        total += out.numel()
        same += int((out == ref).sum())
    return f"{same}/{total} outputs bit-identical"


def ratio(v: float) -> str:
    return f"{v:,.0f}x" if v >= 100 else f"{v:.2f}x"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        return ""


def main(argv=None) -> int:
    default_csv = os.path.join(os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                               "bench_triton.csv")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1080x1920 only, fewer repetitions")
    ap.add_argument("--preset", default="read-7b", choices=sorted(PRESETS))
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--csv", default=default_csv)
    ap.add_argument("--sizes", nargs="+", help="image sizes HxW (default 1080x1920 4000x3000)")
    ap.add_argument("--batches", nargs="+", type=int, default=BATCHES)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: a smoke run of the script in Triton's interpreter (TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("bench_triton.py needs a CUDA device (the CPU torch path is benchmarks/bench_sasp.py)")
        return 2
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("--device cpu runs the kernels in Triton's interpreter: set TRITON_INTERPRET=1")
        return 2
    import triton

    torch.manual_seed(0)
    cfg = PRESETS[args.preset]
    sizes = [tuple(int(v) for v in x.lower().split("x")) for x in args.sizes] if args.sizes else SIZES
    sizes = sizes[:1] if args.quick else sizes
    reps = 15 if args.quick else args.reps
    info = machine()
    info.update(triton=triton.__version__, commit=git_commit(), preset=args.preset)
    print(f"sasp {sasp.__version__} | {info['machine']} | torch {info['torch']} | triton {triton.__version__} | {info['date']}")
    print(f"preset {args.preset}: K={cfg.num_points}, down_sample={cfg.down_sample}, N_p=576, dtoc_radius={cfg.dtoc_radius}")
    if DEVICE == "cuda":
        print(f"CUDA bilinear arithmetic probe (kernel emulation vs F.interpolate): {arithmetic_probe()}")
    print()

    provs = providers(cfg)
    print("| image | batch | provider | pass | median us [p20, p80] | peak MB | vs torch | vs reference |")
    print("|---|---|---|---|---|---|---|---|")
    rows, summary = [], {}
    for hw in sizes:
        for m in args.batches:
            sim = torch.randn(m, 576, device=DEVICE, requires_grad=True)
            hws = [hw] * m
            # sanity: the kernel's discrete points and labels equal the torch path's on this input
            rk = similarity_as_points_triton(sim, hws, cfg)
            os.environ["SASP_BACKEND"] = "torch"
            rt = similarity_as_points(sim, hws, cfg)
            os.environ.pop("SASP_BACKEND", None)
            same = bool(torch.equal(rk[1], rt[1]) and torch.equal(rk[2], rt[2]))
            err = float((rk[0] - rt[0]).detach().abs().max())
            print(f"<!-- {hw[0]}x{hw[1]} batch {m}: points/labels equal to torch path: {same}, max refined diff {err:.2e} px -->")
            results = {}
            for name in ("triton", "triton-nc", "kernels", "torch", "reference"):
                if name == "reference" and m > 1:
                    continue
                fwd, bwd = provs[name]
                results[name] = measure(fwd, bwd, sim, hws, min(3, reps) if name == "reference" else reps)
            for name, res in results.items():
                for p in ("fwd", "bwd", "full"):
                    t = res[p]
                    vs_torch = results["torch"][p]["median"] / t["median"]
                    vs_ref = results["reference"][p]["median"] / t["median"] if "reference" in results else float("nan")
                    summary[(hw, m, name, p)] = (t["median"], vs_torch)
                    print(f"| {hw[0]}x{hw[1]} | {m} | {name} | {p} | {t['median']:.1f} [{t['p20']:.1f}, {t['p80']:.1f}] "
                          f"| {res['mem']:.2f} | {ratio(vs_torch)} | {'' if np.isnan(vs_ref) else ratio(vs_ref)} |")
                    rows.append({**info, "image": f"{hw[0]}x{hw[1]}", "batch": m, "provider": name, "pass": p,
                                 "median_us": f"{t['median']:.2f}", "p20_us": f"{t['p20']:.2f}", "p80_us": f"{t['p80']:.2f}",
                                 "min_us": f"{t['min']:.2f}", "max_us": f"{t['max']:.2f}", "reps": t["reps"],
                                 "peak_mb": f"{res['mem']:.3f}", "speedup_vs_torch": f"{vs_torch:.3f}",
                                 "speedup_vs_reference": "" if np.isnan(vs_ref) else f"{vs_ref:.1f}",
                                 "points_equal_torch": same})
    write_csv(args.csv, rows)

    hw, m, budget, speed = TARGET
    if (hw, m, "triton", "full") in summary:
        t, s = summary[(hw, m, "triton", "full")]
        tk = summary[(hw, m, "kernels", "full")][0]
        print("\nTarget (H100):")
        print(f"  [{'PASS' if t <= budget else 'MISS'}] fwd+bwd for {m} <SEG>s at {hw[0]}x{hw[1]}: {t:.1f} us "
              f"(<= {budget:.0f} us; the kernels alone: {tk:.1f} us)")
        print(f"  [{'PASS' if s >= speed else 'MISS'}] speed-up over the torch path: {s:.1f}x (>= {speed:.0f}x)")
    print(f"\nCSV rows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
