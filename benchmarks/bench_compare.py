"""What the ``sasp compare`` harness costs per sample, beside the models it runs (CPU).

    python benchmarks/bench_compare.py             # 300 samples per case, 480x640 images
    python benchmarks/bench_compare.py --quick     # 60 samples per case
    python benchmarks/bench_compare.py --size 1024 1024 --csv my.csv

Both arms are a near-free predictor (it returns a mask it made once), and the reader hands
out one image and target already in memory, so the wall time of ``compare`` is the harness
itself: the DataLoader, scoring each (sample, arm) (intersection and union against the
target), one JSON line per (sample, arm), the flush + fsync per sample, and the final merge
and summary (bootstrap with 2000 resamples, no plot). The predictor's own time, which the rows
record, is subtracted. Cases: fsync on / off, loader workers 0 / 2, batch 1 / 8.

The end-to-end overhead against the real model is measured by the model's own benchmark; this
one shows the harness adds milliseconds per sample to models that take hundreds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import machine, write_csv  # noqa: E402

from sasp.data.base import Reader, Sample  # noqa: E402
from sasp.evaluate import Arm, Prediction, compare  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


class _MemoryReader(Reader):
    """``n`` samples sharing one in-memory image and target (reading costs nothing)."""

    name = "memory"

    def __init__(self, n: int, size: Sequence[int]):
        h, w = size
        rng = np.random.default_rng(0)
        self.n = n
        self.image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        self.target = np.zeros((h, w), np.uint8)
        self.target[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
        self.size = (h, w)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        return Sample(id=f"m/{i}", image=self.image, query="q", target=lambda: self.target)

    def fingerprint(self) -> Dict[str, Any]:
        return {"name": self.name, "count": self.n, "size": list(self.size)}


class _Fixed:
    """A predictor that returns one precomputed mask per sample."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask

    def __call__(self, samples: Sequence[Sample], images: Sequence[np.ndarray]) -> List[Prediction]:
        return [Prediction(self.mask, True) for _ in samples]


def run_case(n: int, size: Sequence[int], fsync: bool, workers: int, batch: int) -> Dict[str, Any]:
    reader = _MemoryReader(n, size)
    h, w = size
    mask_a = np.zeros((h, w), bool)
    mask_a[h // 3: 2 * h // 3, w // 3: w] = True
    mask_b = np.zeros((h, w), bool)
    mask_b[h // 5: 4 * h // 5, w // 5: 4 * w // 5] = True
    arms = [Arm("a", _Fixed(mask_a), {}), Arm("b", _Fixed(mask_b), {})]
    folder = tempfile.mkdtemp(prefix="bench_compare_")
    try:
        t0 = time.perf_counter()
        compare(reader, arms, folder, batch_size=batch, num_workers=workers, progress=False, plot=False, fsync=fsync)
        wall = time.perf_counter() - t0
        with open(os.path.join(folder, "timing.json")) as f:
            predictor = sum(v["total"] for v in json.load(f).values())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "case": f"fsync={'on' if fsync else 'off'} workers={workers} batch={batch}",
        "samples": n, "size": f"{h}x{w}", "wall_s": round(wall, 3), "predictor_s": round(predictor, 4),
        "overhead_ms_per_sample": round(1e3 * (wall - predictor) / n, 3),
    }


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="60 samples per case instead of 300")
    p.add_argument("--samples", type=int, help="samples per case")
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"), help="image size (480 640)")
    p.add_argument("--csv", default=os.path.join(OUT, "bench_compare.csv"), help="CSV file the rows are appended to")
    args = p.parse_args(list(argv))
    n = args.samples or (60 if args.quick else 300)
    info = machine()
    print(f"# sasp compare harness overhead; {info['machine']}; torch {info['torch']}; {info['date']}")
    print(f"{'case':<34} {'samples':>7} {'size':>9} {'wall s':>8} {'model s':>8} {'overhead ms/sample':>19}")
    rows = []
    for fsync, workers, batch in ((True, 0, 1), (False, 0, 1), (True, 2, 1), (True, 0, 8)):
        r = run_case(n, args.size, fsync, workers, batch)
        rows.append({**r, **info})
        print(f"{r['case']:<34} {r['samples']:>7} {r['size']:>9} {r['wall_s']:>8.3f} {r['predictor_s']:>8.4f} "
              f"{r['overhead_ms_per_sample']:>19.3f}")
    os.makedirs(OUT, exist_ok=True)
    ignore = os.path.join(OUT, ".gitignore")
    if os.path.abspath(args.csv).startswith(OUT) and not os.path.exists(ignore):
        with open(ignore, "w") as f:
            f.write("*\n")
    write_csv(args.csv, rows)
    print(f"appended {len(rows)} rows to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
