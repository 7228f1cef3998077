"""What a comparison leaves in its output folder besides the rows: summary.json, summary.md,
timing.json and compare.png (matplotlib, imported on first use).

``summary.json`` depends on the rows' measurements only (no timings, paths or dates), so two
runs over the same samples (one process or several, interrupted or not) write the same bytes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .rows import write_atomic
from .stats import Summary

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
TIMING_JSON = "timing.json"
PLOT_PNG = "compare.png"


def _num(x: Optional[float], signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _ci(ci: Optional[Sequence[float]], signed: bool = False) -> str:
    return "" if ci is None else f" [{_num(ci[0], signed)}, {_num(ci[1], signed)}]"


def markdown(summary: Summary, timing: Optional[Dict[str, Dict[str, Optional[float]]]] = None) -> str:
    """The summary as a Markdown table plus a few lines of counts."""
    s = summary
    level = int(round(100 * s.bootstrap["level"]))
    head = (f"| arm | gIoU [{level}% CI] | cIoU [{level}% CI] | N-acc | T-acc | see acc | errors |"
            + (" ms/sample |" if timing else ""))
    lines = [f"# sasp compare: {s.dataset.get('name', 'dataset')}", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for role, arm in (("baseline", s.baseline), ("candidate", s.candidate)):
        row = (f"| {role}: {arm.name} | {_num(arm.giou)}{_ci(arm.giou_ci)} | {_num(arm.ciou)}{_ci(arm.ciou_ci)} "
               f"| {_num(arm.n_acc)} | {_num(arm.t_acc)} | {_num(arm.see_acc)} | {arm.errors} |")
        if timing:
            mean = timing.get(arm.name, {}).get("mean")
            row += f" {'n/a' if mean is None else f'{1000 * mean:.2f}'} |"
        lines.append(row)
    delta = (f"| candidate - baseline | {_num(s.delta_giou, True)}{_ci(s.delta_giou_ci, True)} "
             f"| {_num(s.delta_ciou, True)}{_ci(s.delta_ciou_ci, True)} | | | | |" + (" |" if timing else ""))
    lines += [delta, ""]
    lines.append(f"Samples: {s.samples} in the dataset, {s.evaluated} evaluated by both arms, "
                 f"{s.excluded} left out (an error row in either arm).")
    lines.append(f"Per sample: the candidate scores higher on {s.wins}, lower on {s.losses}, "
                 f"equal on {s.ties}.")
    lines.append(f"Protocol: {s.protocol}; intervals: percentile bootstrap over samples, "
                 f"{s.bootstrap['resamples']} paired resamples, seed {s.bootstrap['seed']}.")
    return "\n".join(lines) + "\n"


def write_reports(
    out_dir: os.PathLike,
    summary: Summary,
    rows: Sequence[Dict[str, Any]],
    timing: Dict[str, Dict[str, Optional[float]]],
    plot: bool = True,
) -> List[Path]:
    """Write summary.json, summary.md, timing.json and (``plot``) compare.png; returns the paths."""
    folder = Path(out_dir)
    paths = [folder / SUMMARY_JSON, folder / SUMMARY_MD, folder / TIMING_JSON]
    write_atomic(paths[0], json.dumps(summary.to_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n")
    write_atomic(paths[1], markdown(summary, timing))
    write_atomic(paths[2], json.dumps(timing, indent=1, sort_keys=True) + "\n")
    if plot:
        paths.append(plot_comparison(folder / PLOT_PNG, summary, rows))
    return paths


def paired_scores(rows: Sequence[Dict[str, Any]], arm_names: Tuple[str, str]) -> Tuple[List[float], List[float]]:
    """Per-sample scores (the rows' ``iou``) of the samples both arms evaluated, in index order."""
    by_arm: Dict[str, Dict[int, Dict[str, Any]]] = {a: {} for a in arm_names}
    for r in rows:
        by_arm[r["arm"]][int(r["index"])] = r
    xs, ys = [], []
    for i in sorted(by_arm[arm_names[0]]):
        b, c = by_arm[arm_names[0]][i], by_arm[arm_names[1]].get(i)
        if c is not None and b["error"] is None and c["error"] is None:
            xs.append(float(b["iou"]))
            ys.append(float(c["iou"]))
    return xs, ys


def plot_comparison(path: os.PathLike, summary: Summary, rows: Sequence[Dict[str, Any]]) -> Path:
    """compare.png: per-arm gIoU/cIoU bars with their intervals, and the per-sample scores of
    the candidate (y) against the baseline (x) with the diagonal."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('compare.png needs matplotlib: pip install "sasp[viz]" (or pass plot=False / --no-plot)') from None
    import numpy as np

    s = summary
    fig = Figure(figsize=(10, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax_bar, ax_sc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.1]})
    metrics = [("gIoU", "giou"), ("cIoU", "ciou")]
    width = 0.38
    for k, (role, arm, colour) in enumerate((("baseline", s.baseline, "#8c8c8c"), ("candidate", s.candidate, "#1f77b4"))):
        values = [getattr(arm, key) for _, key in metrics]
        cis = [getattr(arm, f"{key}_ci") for _, key in metrics]
        x = np.arange(len(metrics)) + (k - 0.5) * width
        heights = [v if v is not None else 0.0 for v in values]
        err = np.array([[v - c[0], c[1] - v] if v is not None and c is not None else [0.0, 0.0]
                        for v, c in zip(heights, cis)]).T
        ax_bar.bar(x, heights, width, yerr=err, capsize=4, color=colour, label=f"{role}: {arm.name}")
        for xi, v in zip(x, values):
            ax_bar.text(xi, 0.02, _num(v), ha="center", va="bottom", fontsize=8, rotation=90, color="white")
    ax_bar.set_xticks(np.arange(len(metrics)))
    ax_bar.set_xticklabels([m for m, _ in metrics])
    ax_bar.set_ylim(0, 1.05)
    level = int(round(100 * s.bootstrap["level"]))
    ax_bar.set_title(f"{s.dataset.get('name', 'dataset')}: {s.evaluated} samples ({level}% CI)", fontsize=10)
    ax_bar.legend(loc="upper right", fontsize=8)

    xs, ys = paired_scores(rows, (s.baseline.name, s.candidate.name))
    ax_sc.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", zorder=1)
    ax_sc.scatter(xs, ys, s=10, alpha=0.6, color="#1f77b4", zorder=2)
    ax_sc.set_xlim(-0.02, 1.02)
    ax_sc.set_ylim(-0.02, 1.02)
    ax_sc.set_aspect("equal")
    ax_sc.set_xlabel(f"baseline IoU ({s.baseline.name})")
    ax_sc.set_ylabel(f"candidate IoU ({s.candidate.name})")
    ax_sc.set_title(f"per sample: {s.wins} higher, {s.losses} lower, {s.ties} equal", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out)
    return out
