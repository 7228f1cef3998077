"""Shared benchmark helpers: timing, allocation counting, CSV rows with machine and versions."""
from __future__ import annotations

import csv
import datetime
import os
import platform
import statistics
import time
import tracemalloc
from typing import Callable, Dict, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


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
