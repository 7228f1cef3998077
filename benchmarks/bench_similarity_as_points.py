"""SasP (selection + DtoC) fast path against its literal reference, forward / backward / both.

    python benchmarks/bench_sasp.py            # full table (about 2 minutes on 2 CPU cores)
    python benchmarks/bench_sasp.py --quick    # two sizes, fewer repetitions

Prints median and spread per case, extra memory per <SEG> (total bytes the ops allocate, an
upper bound on the peak), the speed-up against the reference measured in the same run, the
three targets of the core issue, and appends a CSV row per case (machine, versions, date).
The reference loops over rows, so at batch 64 it is timed at batch 1 and scaled by 64.

Timing: the reference runs 5 times per size (once above 4 Mpx), one call per sample. The fast
path is timed in samples of 10 back-to-back calls (per-call time = sample / 10, as timeit does),
in blocks that follow each reference run after untimed warm-up calls, so that both see the same
machine: the load on a shared VM drifts over seconds. A single call timed alone after unrelated
work is slower by its cache misses (about 0.1-0.2 ms on the 2-core VM of the README).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import allocated_bytes, machine, write_csv  # noqa: E402

import sasp  # noqa: E402
from sasp import SasPConfig, dtoc_ref, select_points_ref, similarity_as_points  # noqa: E402

SIZES = [(480, 640), (1024, 768), (1080, 1920), (4000, 3000)]
QUICK_SIZES = [(480, 640), (1080, 1920)]
BATCHES = [1, 64]
INNER = 10  # the fast path's calls per sample, back to back (as timeit does; see main's docstring)


def sasp_step(sim, hw, cfg):
    return similarity_as_points(sim, hw, cfg)[0]


def ref_step(sim, hw, cfg):
    points, _ = select_points_ref(sim, hw, cfg)
    return dtoc_ref(sim, hw, points, cfg)


PASSES = ("fwd", "bwd", "full")


def samples(step, sim, hw, cfg, reps, inner=1):
    """Per-call times in ms of forward, backward (of outputs computed beforehand) and both:
    ``reps`` samples of each, a sample being the mean of ``inner`` back-to-back calls."""
    out = {p: [] for p in PASSES}
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            step(sim, hw, cfg)
        out["fwd"].append((time.perf_counter() - t0) * 1e3 / inner)
        ys = [step(sim, hw, cfg) for _ in range(inner)]
        t0 = time.perf_counter()
        for y in ys:
            y.sum().backward()
        out["bwd"].append((time.perf_counter() - t0) * 1e3 / inner)
        del ys
        t0 = time.perf_counter()
        for _ in range(inner):
            step(sim, hw, cfg).sum().backward()
        out["full"].append((time.perf_counter() - t0) * 1e3 / inner)
    return out


def summary_of(times):
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two image sizes, fewer repetitions")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--csv", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_sasp.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = SasPConfig()
    sizes = QUICK_SIZES if args.quick else SIZES
    reps = 10 if args.quick else 50  # the fast path: many short samples, so that a burst of load on a
    # shared machine moves the median little (the reference runs 1-5 times, up to seconds each)
    info = machine()
    print(f"sasp {sasp.__version__} | {info['machine']} | torch {info['torch']} | {info['date']}")
    print(f"backend: {sasp.backend_for(torch.zeros(1, 576))}, K={cfg.num_points}, N_p=576\n")
    print("| image | batch | pass | sasp ms (median [min, max]) | reference ms | speed-up | sasp KB/<SEG> | reference KB/<SEG> |")
    print("|---|---|---|---|---|---|---|---|")
    rows, summary = [], {}
    for hw in sizes:
        ref_sim = torch.randn(1, 576, requires_grad=True)
        sims = {m: torch.randn(m, 576, requires_grad=True) for m in BATCHES}
        ref_reps = 1 if (args.quick or hw[0] * hw[1] > 4e6) else 5
        # interleaved: each reference run is followed by a block of fast-path runs (after a few
        # untimed ones, as the reference leaves the caches cold), so that both see the same
        # machine: the load of a shared VM drifts over seconds
        ref_t = {p: [] for p in PASSES}
        fast_t = {m: {p: [] for p in PASSES} for m in BATCHES}
        ref_step(ref_sim, [hw], cfg).sum().backward()  # warm-up
        for _ in range(ref_reps):
            for p, t in samples(ref_step, ref_sim, [hw], cfg, 1).items():
                ref_t[p] += t
            for m in BATCHES:
                samples(sasp_step, sims[m], [hw] * m, cfg, 5, INNER)  # warm-up
                for p, t in samples(sasp_step, sims[m], [hw] * m, cfg, max(1, reps // ref_reps), INNER).items():
                    fast_t[m][p] += t
        ref = {p: summary_of(t) for p, t in ref_t.items()}
        ref_mem = allocated_bytes(lambda: ref_step(ref_sim, [hw], cfg).sum().backward())
        for m in BATCHES:
            sim = sims[m]
            fast = {p: summary_of(t) for p, t in fast_t[m].items()}
            mem = allocated_bytes(lambda: sasp_step(sim, [hw] * m, cfg).sum().backward()) / m
            for p in PASSES:
                f, r = fast[p], ref[p]["median_ms"] * m
                speed = r / f["median_ms"]
                summary[(hw, m, p)] = (f["median_ms"], speed, mem)
                print(
                    f"| {hw[0]}x{hw[1]} | {m} | {p} | {f['median_ms']:.3f} [{f['min_ms']:.3f}, {f['max_ms']:.3f}] "
                    f"| {r:.1f}{' (64 x batch 1)' if m > 1 else ''} | {speed:,.0f}x | {mem / 1024:.0f} | {ref_mem / 1024:,.0f} |"
                )
                rows.append({**info, "image": f"{hw[0]}x{hw[1]}", "batch": m, "pass": p, "sasp_median_ms": f"{f['median_ms']:.4f}",
                             "sasp_min_ms": f"{f['min_ms']:.4f}", "sasp_max_ms": f"{f['max_ms']:.4f}", "ref_ms": f"{r:.2f}",
                             "speedup": f"{speed:.1f}", "sasp_bytes_per_seg": int(mem), "ref_bytes_per_seg": ref_mem})
    big = torch.randn(1, 576, requires_grad=True)
    mem_8k = allocated_bytes(lambda: sasp_step(big, [(8000, 8000)], cfg).sum().backward())
    write_csv(args.csv, rows)

    key = (1080, 1920)
    t1, speed1, mem1 = summary[(key, 1, "full")]
    t64 = summary[(key, 64, "full")][0]
    checks = [
        (f"fwd+bwd per <SEG> at 1080x1920 >= 1000x faster than the reference: {speed1:,.0f}x", speed1 >= 1000),
        (f"extra memory per <SEG> <= 1 MB: {mem1 / 2**20:.3f} MB at 1080x1920, {mem_8k / 2**20:.3f} MB at 8000x8000", max(mem1, mem_8k) <= 2**20),
        (f"64 <SEG>s in one call <= 8x one <SEG>: {t64 / t1:.1f}x", t64 <= 8 * t1),
    ]
    print("\nTargets:")
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'MISS'}] {text}")
    print(f"\nCSV rows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
