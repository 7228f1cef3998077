"""Synthetic task generation speed, single-threaded: samples per second at train sizes.

    python benchmarks/bench_synthetic.py              # 200 train samples, 5 runs
    python benchmarks/bench_synthetic.py --n 500 --runs 3 --csv benchmarks/results/bench_synthetic.csv

One sample = ``SyntheticReasonSeg("train")[i]`` plus its ``target()`` mask (what a training
step reads). Prints the median and spread over runs of all tiers mixed, then the rate per tier,
the mean image size and the machine's load average. Rates are given per wall-clock second and
per CPU second of this process: on a busy machine the wall-clock rate falls with the share of
the core the process gets, the CPU-second rate is what one free core delivers.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Tuple  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sasp.data.synthetic import TIERS, SyntheticReasonSeg  # noqa: E402


def rate(ds: SyntheticReasonSeg, start: int, n: int) -> Tuple[float, float]:
    """Samples per wall-clock second and per CPU second reading ``ds[start:start + n]`` and
    each target mask."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(start, start + n):
        ds[i].target()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="samples per run (default 200)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs (default 5), after one warm-up run")
    ap.add_argument("--csv", default=None, help="append one row (machine, versions, date, rates) to this CSV")
    args = ap.parse_args()
    if "torch" in sys.modules:  # not imported by the generator; pinned anyway if something did
        sys.modules["torch"].set_num_threads(1)

    ds = SyntheticReasonSeg("train", size=args.n * (args.runs + 1))
    rate(ds, 0, min(args.n, 20))
    runs = [rate(ds, r * args.n, args.n) for r in range(args.runs)]
    rates, cpu_rates = [w for w, _ in runs], [c for _, c in runs]
    pixels = np.mean([ds[i].image.shape[0] * ds[i].image.shape[1] for i in range(args.n)])
    print(f"synthetic train, {args.n} samples x {args.runs} runs, 1 thread, numpy {np.__version__}, "
          f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"mean image {pixels / 1e3:.0f} kpx (sides 128..640, aspect 1:3..3:1)")
    med, cpu = statistics.median(rates), statistics.median(cpu_rates)
    print(f"{'':<14}  samples/s (wall)  samples/CPU-s")
    print(f"{'all tiers':<14}: {med:8.1f}          {cpu:8.1f}   (wall min {min(rates):.1f}, max {max(rates):.1f}; "
          f"{1e3 / cpu:.2f} CPU-ms/sample)")
    per_tier = {}
    for tier in TIERS:
        per_tier[tier] = rate(SyntheticReasonSeg("train", size=args.n, tiers=[tier]), 0, args.n)
        print(f"{tier:<14}: {per_tier[tier][0]:8.1f}          {per_tier[tier][1]:8.1f}")
    if args.csv:
        row = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{platform.machine()} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})",
               "python": platform.python_version(), "numpy": np.__version__, "n": args.n, "runs": args.runs,
               "median_samples_per_s": round(med, 1), "min": round(min(rates), 1), "max": round(max(rates), 1),
               "median_samples_per_cpu_s": round(cpu, 1),
               **{f"{t}_per_cpu_s": round(v[1], 1) for t, v in per_tier.items()}}
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


if __name__ == "__main__":
    main()
