"""``compare``: run two arms over the same samples, row by row, resumable and sharded.

Flow: samples are read in the reader's order; under ``torch.distributed`` the samples still
to do are dealt round-robin (in a fresh run sample i goes to rank ``i % world_size``). A torch DataLoader (workers optional) loads each sample's image and
target; both arms predict on the same batch, one after the other; each (sample, arm) becomes
one row appended to the rank's row file (``sasp.evaluate.rows``). A sample that cannot be read
(missing image, ``SampleError`` from its target) or on which an arm raises becomes an error
row with the reason, and the run goes on. A restarted run skips the (sample, arm) pairs
already on disk. When every rank is done, rank 0 merges the rows (sorted by index, then arm)
and writes the summary from the merged rows, so the result does not depend on the number of
processes or on interruptions.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.base import Reader, Sample, SampleError
from ..data.image import load_image
from ..metrics import (
    CIOU_EPS, COUNT_EPS, GIOU_EPS, GSVA_GIOU_EPS, IGNORE_INDEX, PROTOCOLS, count_intersection_union, sample_scores,
)
from .arms import Arm, Prediction, check_arms
from .report import write_reports
from .rows import (
    MERGED_FILE, RowWriter, RunError, RunMismatchError, check_run, merge_rows, normalise, rank_file,
    read_all_rows, write_jsonl,
)
from .stats import Summary, summarize, timing

_READ_ERRORS = (SampleError, OSError, ValueError)
"""What reading one sample may raise and still leave the run going (an error row)."""


class LimitedReader(Reader):
    """The first ``limit`` samples of a reader (its fingerprint records the limit)."""

    def __init__(self, reader: Reader, limit: int):
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.reader, self.limit = reader, min(limit, len(reader))
        self.name = reader.name

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.limit:
            raise IndexError(index)
        return self.reader[index]

    def fingerprint(self) -> Dict[str, Any]:
        return {**self.reader.fingerprint(), "limit": self.limit}


class _Loaded(NamedTuple):
    index: int
    id: Optional[str]
    has_target: Optional[bool]
    image: Optional[np.ndarray]
    target: Optional[np.ndarray]
    error: Optional[str]


def _one_line(err: BaseException, stage: str) -> str:
    return f"{stage}: {type(err).__name__}: {' '.join(str(err).split())}"


class _LoadSet(Dataset):
    """Loads image [H, W, 3] uint8 and target [H, W] of the given reader indices."""

    def __init__(self, reader: Reader, indices: Sequence[int]):
        self.reader, self.indices = reader, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> _Loaded:
        i = self.indices[k]
        sid = has_target = None
        stage = "sample"
        try:
            sample = self.reader[i]
            sid, has_target = str(sample.id), bool(sample.has_target)
            stage = "image"
            image = load_image(sample.image)
            stage = "target"
            target = np.asarray(sample.target())
            if target.shape != image.shape[:2]:
                raise SampleError(f"target shape {tuple(target.shape)} differs from the image's {image.shape[:2]}")
        except _READ_ERRORS as err:
            return _Loaded(i, sid, has_target, None, None, _one_line(err, stage))
        return _Loaded(i, sid, has_target, image, target, None)


def _collate(items: List[_Loaded]) -> List[_Loaded]:
    return items


def _dist() -> Tuple[Any, int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def _broadcast(dist: Any, obj: Any) -> Any:
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _on_rank0(dist: Any, rank: int, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0, its result (or its error, re-raised) on every rank."""
    result: Any = None
    error: Optional[BaseException] = None
    if rank == 0:
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - passed on to the other ranks, then re-raised
            error, result = err, ("error", type(err).__name__, str(err))
    result = _broadcast(dist, result)
    if error is not None:
        raise error
    if isinstance(result, tuple) and len(result) == 3 and result[0] == "error":
        cls = RunMismatchError if result[1] == "RunMismatchError" else RunError
        raise cls(f"rank 0: {result[2]}" if result[1] not in ("RunError", "RunMismatchError") else result[2])
    return result


def _predict(arm: Arm, samples: List[Sample], images: List[np.ndarray], fail_fast: bool) -> List[Tuple[Any, float]]:
    """[(Prediction or error text, seconds per sample)]; a failing batch is retried one sample
    at a time so that only the samples that fail become error rows."""
    t0 = time.perf_counter()
    try:
        out = list(arm.predict(samples, images))
        if len(out) != len(samples):
            raise ValueError(f"returned {len(out)} predictions for {len(samples)} samples")
    except Exception as err:  # noqa: BLE001 - a model may raise anything; the row records it
        if fail_fast:
            raise
        if len(samples) > 1:
            return [r for s, im in zip(samples, images) for r in _predict(arm, [s], [im], False)]
        return [(_one_line(err, f"predict ({arm.name})"), time.perf_counter() - t0)]
    dt = (time.perf_counter() - t0) / max(len(samples), 1)
    return [(p, dt) for p in out]


def _row(item: _Loaded, arm: str, pred: Any, seconds: Optional[float], protocol: str) -> Dict[str, Any]:
    row: Dict[str, Any] = dict(
        id=item.id, index=item.index, arm=arm, intersection=None, union=None, iou=None,
        pred_empty=None, target_empty=None, has_target=item.has_target, pred_has_object=None,
        seconds=seconds, error=item.error,
    )
    if item.error is not None:
        return row
    target = item.target
    row["target_empty"] = not bool(target.any())
    if isinstance(pred, str):
        row["error"] = pred
        return row
    try:
        if not isinstance(pred, Prediction) and not (isinstance(pred, tuple) and len(pred) == 2):
            raise ValueError(f"expected a Prediction(mask, has_object), got {type(pred).__name__}")
        mask, has_object = pred
        if hasattr(mask, "detach"):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask)
        if mask.shape != target.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from the image's {tuple(target.shape)}")
        i, u = count_intersection_union(mask, target, IGNORE_INDEX)
        has_object = bool(has_object)
    except (ValueError, TypeError) as err:
        row["error"] = _one_line(err, f"prediction ({arm})")
        return row
    score = sample_scores([i], [u], [row["target_empty"]], [has_object], protocol)[0]
    row.update(intersection=i, union=u, iou=float(score[0]), pred_empty=not bool(mask.any()),
               pred_has_object=has_object)
    return row


def fingerprint_of(reader: Reader, arms: Tuple[Arm, Arm], protocol: str, seed: int) -> Dict[str, Any]:
    """What identifies a run's rows: the reader, both arms, the metric settings and the seed."""
    return normalise({
        "reader": reader.fingerprint(),
        "arms": {role: {"name": a.name, "describe": a.describe} for role, a in zip(("baseline", "candidate"), arms)},
        "metrics": {"protocol": protocol, "ignore_index": IGNORE_INDEX, "giou_eps": GIOU_EPS,
                    "gsva_giou_eps": GSVA_GIOU_EPS, "ciou_eps": CIOU_EPS, "count_eps": COUNT_EPS},
        "seed": seed,
    })


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError('the progress bar needs tqdm: pip install "sasp[viz]" (or pass progress=False / --quiet)') from None
    return tqdm(total=total, initial=initial, unit="sample", desc="compare", dynamic_ncols=True)


def compare(
    reader: Reader,
    arms: Sequence[Arm],
    out_dir: Union[str, os.PathLike],
    batch_size: int = 1,
    num_workers: int = 0,
    seed: int = 0,
    protocol: str = "lisa",
    resamples: int = 2000,
    level: float = 0.95,
    progress: bool = True,
    plot: bool = True,
    fail_fast: bool = False,
    fsync: bool = True,
) -> Summary:
    """Evaluate a baseline and a candidate arm on every sample of ``reader``.

    Args:
        reader: the samples (``sasp.data.Reader``), read in order.
        arms: (baseline, candidate), see ``sasp.evaluate.Arm``.
        out_dir: the output folder; rows already in it are kept and skipped (resume) when its
            ``run.json`` holds this run's fingerprint, and the run is refused otherwise.
        batch_size: samples per predictor call; num_workers: DataLoader workers that read
            images and targets.
        seed: seeds Python's, numpy's and torch's generators before the first batch (for
            predictors that sample) and the bootstrap; part of the fingerprint.
        protocol: "lisa" (ReasonSeg, RefCOCO, FP-RefCOCO) or "gsva" (gRefCOCO's no-target rule),
            see ``sasp.metrics.sample_scores``.
        resamples, level: the paired bootstrap's resample count and interval coverage.
        progress: a tqdm bar on rank 0; plot: write compare.png (matplotlib).
        fail_fast: raise the first exception an arm raises instead of writing an error row.
        fsync: fsync the row file after each sample (a killed run keeps every written row).

    Returns:
        The ``Summary`` (on every rank). Files in ``out_dir``: run.json, samples.rank<R>.jsonl,
        samples.jsonl (merged), summary.json, summary.md, timing.json, compare.png.
    """
    pair = check_arms(arms)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}")
    names = (pair[0].name, pair[1].name)
    dist, rank, world = _dist()
    out = Path(out_dir)
    fp = fingerprint_of(reader, pair, protocol, seed)
    _on_rank0(dist, rank, lambda: check_run(out, fp))

    own = rank_file(out, rank)
    done: Set[Tuple[int, str]] = {(int(r["index"]), r["arm"]) for r in read_all_rows(out, own=own)}
    if dist is not None:
        dist.barrier()  # every rank has read the same rows before any rank appends
    # the samples still to do, dealt round-robin: sample i goes to rank i % world in a fresh
    # run, and a resumed run spreads what is left evenly whatever the earlier world size was
    left = [i for i in range(len(reader)) if any((i, a) not in done for a in names)]
    todo = left[rank::world]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loader = DataLoader(_LoadSet(reader, todo), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate)
    finished = (len(reader) - len(left)) // world  # this rank's share of the samples done before
    bar = _progress(finished + len(todo), finished, progress and rank == 0)
    try:
        with RowWriter(own, fsync=fsync) as writer:
            for batch in loader:
                results: Dict[str, Dict[int, Tuple[Any, Optional[float]]]] = {}
                for arm in pair:
                    ks = [k for k, it in enumerate(batch) if (it.index, arm.name) not in done and it.error is None]
                    if ks:
                        samples = [reader[batch[k].index] for k in ks]
                        preds = _predict(arm, samples, [batch[k].image for k in ks], fail_fast)
                        results[arm.name] = dict(zip(ks, preds))
                    else:
                        results[arm.name] = {}
                for k, item in enumerate(batch):
                    pending = [a for a in names if (item.index, a) not in done]
                    writer.write(_row(item, a, *results[a].get(k, (None, None)), protocol) for a in pending)
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    if dist is not None:
        dist.barrier()
    return _on_rank0(dist, rank, lambda: finish(
        out, names, reader.fingerprint(), len(reader), protocol, resamples, seed, level, plot))


def finish(
    out_dir: Union[str, os.PathLike],
    arm_names: Tuple[str, str],
    dataset: Dict[str, Any],
    count: int,
    protocol: str = "lisa",
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    plot: bool = True,
) -> Summary:
    """Merge every rank's rows in ``out_dir`` into samples.jsonl and write the reports."""
    rows = merge_rows(read_all_rows(out_dir), arm_names, count)
    write_jsonl(Path(out_dir) / MERGED_FILE, rows)
    summary = summarize(rows, arm_names, normalise(dataset), protocol, resamples, seed, level)
    write_reports(out_dir, summary, rows, timing(rows, arm_names), plot=plot)
    return summary
