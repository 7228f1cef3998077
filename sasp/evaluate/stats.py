"""Paired statistics of two arms over the same samples: metrics, bootstrap intervals, wins.

Samples where either arm has an error row are left out of every metric (so that both arms
are measured on the same samples) and counted. Intervals are percentile bootstraps over
samples: each resample draws N sample indices with replacement (numpy ``default_rng(seed)``),
and the same indices serve both arms, so the interval of a difference reflects the pairing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..metrics import (
    COUNT_EPS,
    CIOU_EPS,
    ciou_from_counts,
    giou_from_scores,
    nt_accuracy,
    sample_scores,
    see_accuracy,
    sesame_exists,
)

Interval = Optional[Tuple[float, float]]

_CHUNK_ELEMENTS = 1 << 21  # resampled indices held at once (B x N int64: 16 MiB)


@dataclass(frozen=True)
class ArmStats:
    """One arm's metrics on the evaluated samples (None: undefined for these samples).

    ``giou``/``ciou`` follow the run's protocol (``sasp.metrics.sample_scores``); ``n_acc``
    and ``t_acc`` are GSVA's, ``see_acc`` SESAME's; ``errors`` counts this arm's error rows.
    """

    name: str
    errors: int
    giou: Optional[float]
    giou_ci: Interval
    ciou: Optional[float]
    ciou_ci: Interval
    n_acc: Optional[float]
    t_acc: Optional[float]
    see_acc: Optional[float]


@dataclass(frozen=True)
class Summary:
    """The result of ``compare``: per-arm metrics and the paired differences (candidate -
    baseline) with bootstrap intervals; ``wins``/``losses``/``ties`` count samples whose
    per-sample score is higher / lower / equal for the candidate."""

    dataset: Dict[str, Any]
    protocol: str
    samples: int
    evaluated: int
    excluded: int
    baseline: ArmStats
    candidate: ArmStats
    delta_giou: Optional[float]
    delta_giou_ci: Interval
    delta_ciou: Optional[float]
    delta_ciou_ci: Interval
    wins: int
    losses: int
    ties: int
    bootstrap: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        for key, value in list(out.items()):
            if key.endswith("_ci") and value is not None:
                out[key] = list(value)
        for arm in ("baseline", "candidate"):
            for key in ("giou_ci", "ciou_ci"):
                if out[arm][key] is not None:
                    out[arm][key] = list(out[arm][key])
        return out


def _interval(values: np.ndarray, level: float) -> Tuple[float, float]:
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def paired_bootstrap(
    base: Tuple[np.ndarray, np.ndarray, np.ndarray],
    cand: Tuple[np.ndarray, np.ndarray, np.ndarray],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    count_eps: float = COUNT_EPS,
    ciou_eps: float = CIOU_EPS,
) -> Dict[str, Tuple[float, float]]:
    """Percentile intervals of gIoU, cIoU and their differences over shared resamples.

    Args:
        base, cand: (score, c_inter, c_union), float64 [N] each (``sample_scores``).
        resamples: B, the number of resamples; seed: numpy ``default_rng`` seed.
        level: the interval's coverage (0.95: the 2.5th and 97.5th percentiles).

    Returns:
        {"giou_b", "giou_c", "ciou_b", "ciou_c", "delta_giou", "delta_ciou"}: (lo, hi).
    """
    n = base[0].size
    if n == 0 or resamples < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap needs samples (got {n}), resamples >= 1 (got {resamples}) and 0 < level < 1")
    rng = np.random.default_rng(seed)
    out: Dict[str, List[np.ndarray]] = {k: [] for k in ("giou_b", "giou_c", "ciou_b", "ciou_c")}
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(step, resamples - start), n))
        for tag, (score, ci, cu) in (("b", base), ("c", cand)):
            out[f"giou_{tag}"].append(score[idx].sum(axis=1) / (n + count_eps))
            out[f"ciou_{tag}"].append(ci[idx].sum(axis=1) / (cu[idx].sum(axis=1) + ciou_eps))
    stats = {k: np.concatenate(v) for k, v in out.items()}
    stats["delta_giou"] = stats["giou_c"] - stats["giou_b"]
    stats["delta_ciou"] = stats["ciou_c"] - stats["ciou_b"]
    return {k: _interval(v, level) for k, v in stats.items()}


def _arm_arrays(rows: Sequence[Dict[str, Any]], protocol: str) -> Tuple[np.ndarray, ...]:
    inter = [r["intersection"] for r in rows]
    union = [r["union"] for r in rows]
    empty = [r["target_empty"] for r in rows]
    has_obj = [r["pred_has_object"] for r in rows]
    return sample_scores(inter, union, empty, has_obj, protocol)


def summarize(
    rows: Sequence[Dict[str, Any]],
    arm_names: Tuple[str, str],
    dataset: Dict[str, Any],
    protocol: str = "lisa",
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Summary:
    """The summary of merged rows (``rows.merge_rows``: sorted by index, then arm)."""
    by_arm: Dict[str, Dict[int, Dict[str, Any]]] = {name: {} for name in arm_names}
    for row in rows:
        by_arm[row["arm"]][int(row["index"])] = row
    indices = sorted(by_arm[arm_names[0]])
    valid = [i for i in indices if all(by_arm[a][i]["error"] is None for a in arm_names)]
    errors = {a: sum(r["error"] is not None for r in by_arm[a].values()) for a in arm_names}
    arm_rows = {a: [by_arm[a][i] for i in valid] for a in arm_names}

    empty_stats = dict(giou=None, giou_ci=None, ciou=None, ciou_ci=None, n_acc=None, t_acc=None, see_acc=None)
    if not valid:
        arms = [ArmStats(name=a, errors=errors[a], **empty_stats) for a in arm_names]
        return Summary(dataset, protocol, len(indices), 0, len(indices), arms[0], arms[1], None, None,
                       None, None, 0, 0, 0, {"resamples": resamples, "seed": seed, "level": level})

    arrays = {a: _arm_arrays(arm_rows[a], protocol) for a in arm_names}
    ci = paired_bootstrap(arrays[arm_names[0]], arrays[arm_names[1]], resamples, seed, level)
    stats = []
    for a, tag in zip(arm_names, ("b", "c")):
        score, c_inter, c_union = arrays[a]
        rs = arm_rows[a]
        n_acc, t_acc = nt_accuracy([r["target_empty"] for r in rs], [r["pred_has_object"] for r in rs])
        exists = sesame_exists([r["pred_has_object"] for r in rs], [r["pred_empty"] for r in rs])
        stats.append(ArmStats(
            name=a, errors=errors[a],
            giou=giou_from_scores(score), giou_ci=ci[f"giou_{tag}"],
            ciou=ciou_from_counts(c_inter, c_union), ciou_ci=ci[f"ciou_{tag}"],
            n_acc=n_acc, t_acc=t_acc, see_acc=see_accuracy(exists, [r["has_target"] for r in rs]),
        ))
    diff = arrays[arm_names[1]][0] - arrays[arm_names[0]][0]
    return Summary(
        dataset=dataset, protocol=protocol, samples=len(indices), evaluated=len(valid),
        excluded=len(indices) - len(valid), baseline=stats[0], candidate=stats[1],
        delta_giou=stats[1].giou - stats[0].giou, delta_giou_ci=ci["delta_giou"],
        delta_ciou=stats[1].ciou - stats[0].ciou, delta_ciou_ci=ci["delta_ciou"],
        wins=int((diff > 0).sum()), losses=int((diff < 0).sum()), ties=int((diff == 0).sum()),
        bootstrap={"resamples": resamples, "seed": seed, "level": level},
    )


def timing(rows: Sequence[Dict[str, Any]], arm_names: Sequence[str]) -> Dict[str, Dict[str, Optional[float]]]:
    """Seconds per sample of each arm's rows without error: mean, median, total."""
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for a in arm_names:
        sec = np.asarray([r["seconds"] for r in rows if r["arm"] == a and r["error"] is None
                          and r["seconds"] is not None], dtype=np.float64)
        out[a] = {
            "mean": float(sec.mean()) if sec.size else None,
            "median": float(np.median(sec)) if sec.size else None,
            "total": float(sec.sum()),
        }
    return out
