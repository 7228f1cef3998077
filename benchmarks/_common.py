"""Shared benchmark helpers: timing, allocation counting, CSV rows with machine and versions,
and the harness of the op benchmarks (bench_select.py, bench_dtoc.py,
bench_similarity_as_points.py).

The harness times providers (reference, torch, triton) side by side in one run, with
``torch.utils.benchmark.Timer`` on CPU and ``triton.testing.do_bench`` on CUDA, and measures
the extra memory per <SEG>. A provider builds, for one batch of inputs, a function per pass
("fwd", "bwd", "full"). The reference loops over rows, so it is measured at batch 1 and
scaled by the batch. On CPU the reference's runs (one timed call each, after one untimed) are
interleaved with blocks of the fast providers' runs, so that both see the same machine: the
load of a shared CPU drifts over seconds.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import time
import tracemalloc
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.benchmark import Timer

def timeit(fn: Callable[[], object], reps: int, warmup: int = 1, sync: Callable[[], None] = lambda: None) -> Dict[str, float]:
    """Median and spread (min, max, IQR) of ``fn`` in milliseconds over ``reps`` runs."""
    for _ in range(warmup):
        fn()
    sync()
    times: List[float] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "iqr_ms": q[2] - q[0], "reps": reps}


class AllocCounter(TorchDispatchMode):
    """Counts the bytes of every new tensor storage that torch ops create while active.

    The total allocated is an upper bound on the peak extra memory (nothing freed is counted
    back), so "total <= 1 MB" proves "peak <= 1 MB" on any device. Views share their input's
    storage and are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st.data_ptr() not in inputs:
                    inputs.add(st.data_ptr())  # count each new storage once per op
                    self.bytes += st.nbytes()
        return out


def allocated_bytes(fn: Callable[[], object]) -> int:
    """Total bytes of tensor storage that ``fn`` allocates (an upper bound on its peak), plus
    the peak of the host arrays numpy allocates meanwhile (numpy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        with AllocCounter() as counter:
            fn()
        host_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return counter.bytes + host_peak


def machine() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return {
        "machine": f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)" + (f"; {gpu}" if gpu else ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_csv(path: str, rows: List[Dict[str, object]]) -> None:
    """Append rows (dicts with the same keys) to a CSV file, writing the header once."""
    if not rows:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------------------------
# The op benchmarks' harness
# --------------------------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "out")  # untracked (.gitignore)
SIZES = [(480, 640), (1024, 768), (1080, 1920), (4000, 3000)]
QUICK_SIZES = [(480, 640), (1080, 1920)]
BATCHES = [1, 64]
PASSES = ("fwd", "bwd", "full")

Passes = Dict[str, Callable[[], object]]


@dataclass
class Provider:
    name: str
    build: Callable[[torch.Tensor, List[Tuple[int, int]]], Passes]  # (sim [M, N_p], hw) -> pass -> fn
    per_row: bool = False  # a loop over rows: measured at batch 1, scaled by the batch


def parse_args(op: str, doc: str, argv=None, default_threads: int = 2) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two image sizes, one reference run per size")
    ap.add_argument("--threads", type=int, default=default_threads, help=f"torch CPU threads (default {default_threads})")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the inputs live (default cpu)")
    ap.add_argument("--providers", nargs="+", help="subset of the providers to run (the reference always runs)")
    ap.add_argument("--sizes", nargs="+", help="image sizes HxW (default 480x640 1024x768 1080x1920 4000x3000)")
    ap.add_argument("--batches", nargs="+", type=int, default=list(BATCHES), help="<SEG>s per call (default 1 64)")
    ap.add_argument("--csv", default=os.path.join(OUT_DIR, f"bench_{op}.csv"),
                    help=f"CSV file to append to (default benchmarks/out/bench_{op}.csv, not tracked)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda needs a CUDA device")
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes] if args.sizes else None
    args.sizes = sizes or (QUICK_SIZES if args.quick else SIZES)
    return args


def setup(args: argparse.Namespace, title: str) -> Dict[str, str]:
    """Pin the torch thread count, seed, print the machine (CPU model, cores, threads, GPU,
    versions, date) and return it for the CSV rows."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = machine()
    try:
        info["triton"] = importlib.metadata.version("triton")  # without importing it
    except importlib.metadata.PackageNotFoundError:
        info["triton"] = ""
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    except OSError:
        info["commit"] = ""
    info["threads"] = str(torch.get_num_threads())
    print(title)
    print(f"machine: {info['machine']}")
    print(f"torch {info['torch']}" + (f", triton {info['triton']}" if info["triton"] else "") + f", python {info['python']}"
          f" | {info['date']} | commit {info['commit']} | torch.set_num_threads({info['threads']})")
    return info


def cpu_times(fn: Callable[[], object], threads: int, samples: int, number: int) -> List[float]:
    """Per-call times in ms of ``samples`` samples, each ``Timer.timeit(number)`` (``number``
    back-to-back calls after two untimed ones). ``number=0``: one timed call after one untimed
    (``Timer.blocked_autorange`` of a call slower than its budget), for the slow reference."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    if number == 0:
        return [t * 1e3 for _ in range(samples) for t in timer.blocked_autorange(min_run_time=0.0).times]
    return [timer.timeit(number).median * 1e3 for _ in range(samples)]


def cuda_times(fn: Callable[[], object]) -> List[float]:
    """Median, min and max latency in ms (``triton.testing.do_bench``: CUDA events, L2 flushed)."""
    from triton.testing import do_bench

    return list(do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.0, 1.0]))


def extra_bytes(fn: Callable[[], object], device: str) -> int:
    """Extra memory of ``fn``. CPU: all tensor storage it allocates (an upper bound on its
    peak) plus the peak of numpy's host arrays (numpy reports to tracemalloc). CUDA: the peak
    of the caching allocator above what was allocated before."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    tracemalloc.start()
    try:
        with AllocCounter() as counter:
            fn()
        host_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return counter.bytes + host_peak


def fmt_ms(v: float) -> str:
    return f"{v:,.1f}" if v >= 100 else f"{v:.3f}" if v >= 0.1 else f"{v:.4f}"


def measure(providers: Sequence[Provider], make_sim: Callable[[int], torch.Tensor], sizes, batches, passes,
            args: argparse.Namespace, number: int = 10):
    """Time every provider at every size and batch; returns {(hw, batch, provider, pass): stats}
    with stats = (median ms, min ms, max ms, samples, bytes per <SEG>) (the per-row reference:
    at batch 1 only). On CPU: rounds of interleaved runs per size (5; 1 with --quick or above
    4 Mpx, where one reference call takes seconds), each a reference call per pass and then a
    block of samples of ``number`` calls per fast provider, batch and pass: 50 samples in all
    (10 with --quick)."""
    cuda = args.device == "cuda"
    reps = 10 if args.quick else 50
    out = {}
    for hw in sizes:
        n_rounds = 1 if (cuda or args.quick or hw[0] * hw[1] > 4e6) else 5
        runs = {}  # (batch, provider) -> passes
        for p in providers:
            for m in ([1] if p.per_row else batches):
                sim = make_sim(m)
                runs[(m, p.name)] = (p, p.build(sim, [hw] * m))
        mem_pass = "full" if "full" in passes else passes[0]
        mem = {key: extra_bytes(fns[mem_pass], args.device) / key[0] for key, (_, fns) in runs.items()}
        times = {(m, name, q): [] for (m, name) in runs for q in passes}
        for _ in range(n_rounds):
            for (m, name), (p, fns) in runs.items():  # per-row providers first (dicts keep order)
                for q in passes:
                    if cuda:
                        times[(m, name, q)] = cuda_times(fns[q])
                    else:
                        samples, n = (1, 0) if p.per_row else (max(1, reps // n_rounds), number)
                        times[(m, name, q)] += cpu_times(fns[q], args.threads, samples, n)
                    getattr(fns[q], "reset", lambda: None)()
        for (m, name), (p, fns) in runs.items():
            for q in passes:
                t = times[(m, name, q)]
                if cuda:
                    out[(hw, m, name, q)] = (t[0], t[1], t[2], 0, mem[(m, name)])
                else:
                    out[(hw, m, name, q)] = (statistics.median(t), min(t), max(t), len(t), mem[(m, name)])
    return out


def report(stats, providers: Sequence[Provider], sizes, batches, passes, info, op: str) -> List[Dict[str, object]]:
    """Print the table (one row per size, batch, provider and pass; the reference at batch 1)
    and return the CSV rows."""
    ref = next(p.name for p in providers if p.per_row)
    print("\n| image | batch | provider | pass | median ms [min, max] | reference ms | speed-up | KB/<SEG> | reference KB/<SEG> |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for hw in sizes:
        for m in batches:
            for p in providers:
                if p.per_row and m > 1:
                    continue
                for q in passes:
                    med, lo, hi, n, mem = stats[(hw, m, p.name, q)]
                    r_med, _, _, _, r_mem = stats[(hw, 1, ref, q)]
                    r, speed = r_med * m, r_med * m / med
                    scaled = f" ({m} x batch 1)" if m > 1 else ""
                    ratio = f"{speed:,.0f}x" if speed >= 100 else f"{speed:.2f}x"
                    print(f"| {hw[0]}x{hw[1]} | {m} | {p.name} | {q} | {fmt_ms(med)} [{fmt_ms(lo)}, {fmt_ms(hi)}] "
                          f"| {fmt_ms(r)}{scaled} | {ratio} | {mem / 1024:,.0f} | {r_mem / 1024:,.0f} |")
                    rows.append({**info, "op": op, "image": f"{hw[0]}x{hw[1]}", "batch": m, "provider": p.name, "pass": q,
                                 "median_ms": f"{med:.4f}", "min_ms": f"{lo:.4f}", "max_ms": f"{hi:.4f}", "samples": n,
                                 "reference_ms": f"{r:.3f}", "speedup": f"{speed:.2f}", "bytes_per_seg": int(mem),
                                 "reference_bytes_per_seg": int(r_mem)})
    return rows


class _Backward:
    """The bwd pass: the gradient of an output computed beforehand (its graph kept between
    calls). The forward runs on the first call, which the timers do not count (they warm up);
    ``reset`` frees the graph (the reference's holds several GB at 4000x3000)."""

    def __init__(self, forward: Callable[[], torch.Tensor], sim: torch.Tensor) -> None:
        self.forward, self.sim, self.out = forward, sim, None

    def __call__(self):
        if self.out is None:
            self.out = self.forward()
            self.ones = torch.ones_like(self.out)
        return torch.autograd.grad(self.out, self.sim, self.ones, retain_graph=True)

    def reset(self) -> None:
        self.out = None


def autograd_passes(forward: Callable[[], torch.Tensor], sim: torch.Tensor) -> Passes:
    """fwd, bwd and full (both) of a differentiable forward; the gradient of the output's sum."""
    return {
        "fwd": forward,
        "bwd": _Backward(forward, sim),
        "full": lambda: torch.autograd.grad(forward().sum(), sim),
    }


def run(op: str, doc: str, make_providers: Callable[[argparse.Namespace], List[Provider]], passes: Sequence[str], argv=None):
    """Parse the command line, pin the threads, print the machine, time the providers, print the
    table and append the CSV rows. Returns (args, stats) for the caller's targets."""
    args = parse_args(op, doc, argv)
    providers = make_providers(args)
    info = setup(args, f"bench_{op}.py: providers {', '.join(p.name for p in providers)} on {args.device}")
    stats = measure(providers, lambda m: torch.randn(m, 576, device=args.device, requires_grad="bwd" in passes),
                    args.sizes, args.batches, passes, args)
    write_csv(args.csv, report(stats, providers, args.sizes, args.batches, passes, info, op))
    print(f"\nCSV rows appended to {os.path.relpath(args.csv)}")
    return args, stats
