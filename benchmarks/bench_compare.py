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

``--model tiny`` measures the harness against a real model instead: the shipped trained tiny
SegLlava (SasP off and on, teacher-forced as in LISA's validation) on synthetic test samples
held in memory, its two predictors called directly on every sample ("model alone") against the
same predictors run through ``compare`` (workers 0, batch 1, fsync on), alternating, so both
see the same machine. The overhead is (compare - alone) / alone.
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


class _ListReader(Reader):
    """Samples materialised in memory (image arrays, targets computed once)."""

    name = "synthetic-in-memory"

    def __init__(self, samples: Sequence[Sample]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


def run_model_case(n: int, repeats: int) -> Dict[str, Any]:
    """Median over ``repeats`` of the tiny model's time per sample alone and through compare."""
    import torch

    from sasp.data import SyntheticReasonSeg
    from sasp.models.seg_llava import load_pretrained_tiny, seg_llava_predictor

    torch.manual_seed(0)
    base, processor = load_pretrained_tiny()
    cand = __import__("copy").deepcopy(base)
    base.config.with_sasp(None)
    samples = []
    for s in SyntheticReasonSeg("test", size=n):
        target = s.target()
        samples.append(Sample(id=s.id, image=s.image, query=s.query, target=lambda t=target: t,
                              has_target=s.has_target, meta=s.meta, instruction=s.instruction))
    arms = [Arm("baseline", seg_llava_predictor(base, processor), {"sasp": None}),
            Arm("sasp", seg_llava_predictor(cand, processor), {"sasp": "shipped"})]
    alone, through = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in samples:
            for arm in arms:
                arm.predict([s], [s.image])
        alone.append(time.perf_counter() - t0)
        folder = tempfile.mkdtemp(prefix="bench_compare_model_")
        try:
            t0 = time.perf_counter()
            compare(_ListReader(samples), arms, folder, batch_size=1, num_workers=0, progress=False, plot=False)
            through.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    a, b = float(np.median(alone)), float(np.median(through))
    return {"case": "tiny SegLlava, both arms", "samples": n, "model_alone_ms_per_sample": round(1e3 * a / n, 2),
            "through_compare_ms_per_sample": round(1e3 * b / n, 2), "overhead_pct": round(100 * (b - a) / a, 2),
            "alone_runs_s": [round(x, 3) for x in alone], "compare_runs_s": [round(x, 3) for x in through]}


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="60 samples per case instead of 300")
    p.add_argument("--samples", type=int, help="samples per case")
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"), help="image size (480 640)")
    p.add_argument("--csv", default=os.path.join(OUT, "bench_compare.csv"), help="CSV file the rows are appended to")
    p.add_argument("--model", choices=["tiny"], help="measure against the shipped trained tiny model instead")
    p.add_argument("--repeats", type=int, default=3, help="--model: alternating repeats (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (pinned; default 1)")
    args = p.parse_args(list(argv))
    import torch

    torch.set_num_threads(args.threads)
    info = machine()
    if args.model:
        n = args.samples or (20 if args.quick else 60)
        print(f"# sasp compare overhead on the tiny model; {info['machine']}; torch {info['torch']}; "
              f"{args.threads} thread(s); {info['date']}")
        r = run_model_case(n, args.repeats)
        print(f"samples {n}: model alone {r['model_alone_ms_per_sample']} ms/sample, through compare "
              f"{r['through_compare_ms_per_sample']} ms/sample, overhead {r['overhead_pct']:+.2f}% "
              f"(runs alone {r['alone_runs_s']} s, through compare {r['compare_runs_s']} s)")
        print(f"[{'PASS' if r['overhead_pct'] <= 5 else 'MISS'}] the harness adds <= 5% to the model's time per sample")
        os.makedirs(OUT, exist_ok=True)
        write_csv(args.csv.replace("bench_compare.csv", "bench_compare_model.csv"), [{**r, **info}])
        return 0
    n = args.samples or (60 if args.quick else 300)
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
