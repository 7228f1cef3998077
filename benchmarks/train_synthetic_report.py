"""Test-set evaluation and analysis of a ``train_synthetic.py run``: baseline vs SasP per seed.

    python benchmarks/train_synthetic_report.py compare --run main800   # sasp compare per seed (+ generate)
    python benchmarks/train_synthetic_report.py report --run main800    # tables, intervals, curves, points

``compare`` runs, for every seed, ``sasp compare`` on the held-out synthetic test set (200
samples, teacher-forced "Sure, [SEG]." as LISA's validation) with the seed's baseline-arm model
as ``--baseline`` and its SasP-arm model as ``--candidate`` (each in the arm it was trained
in), one generate-mode compare (``--arm-arg generate=1``) for the seed whose SasP model has
the best final val gIoU, and per seed the SasP model without its points (``--preset-baseline
none``) against itself with them. ``report`` reads the rows and writes ``report.json`` next to
the run:

- per arm and seed: gIoU / cIoU on the 200 samples (LISA's protocol: a false-premise sample
  scores 1 when the teacher-forced mask is empty), gIoU / cIoU on the 160 samples with a target,
  per-tier gIoU; mean and sample standard deviation over seeds;
- the paired difference (SasP - baseline): per seed (``sasp compare``'s bootstrap over the
  seed's 200 samples) and pooled (the 3 x 200 paired rows resampled together; percentile
  bootstrap, 10,000 resamples), plus the mean of the per-seed differences;
- the similarity maps of every final model on the test samples with a target: where SasP's
  points fall (fraction of positive / negative points inside the target mask), how many
  positives a map yields, and how well the map ranks target pixels above the rest (AUC);
  for the baseline arm the points are computed from its map with the same settings but not
  given to SAM;
- the points-off ablation: what the points add to the SasP-trained model at test time;
- the val gIoU curves of both arms in one PNG (``--plot``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out", "train_synthetic")
TEST_SIZE = 200


def _runs(root: str) -> Dict[str, Dict[int, Dict[str, Any]]]:
    out: Dict[str, Dict[int, Dict[str, Any]]] = {"baseline": {}, "sasp": {}}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "run.json")
        if name.split("-seed")[0] in out and os.path.isfile(path):
            with open(path) as f:
                rec = json.load(f)
            rec["folder"] = os.path.join(root, name)
            out[rec["arm"]][int(rec["seed"])] = rec
    return out


def compare_command(base: str, cand: str, out: str, generate: bool = False, base_points_off: bool = False) -> List[str]:
    cmd = [sys.executable, "-m", "sasp", "compare", "--data", "synthetic", "--split", "test",
           "--data-arg", f"size={TEST_SIZE}", "--baseline", base, "--candidate", cand, "--out", out,
           "--device", "cpu", "--batch-size", "8", "--quiet"]
    return cmd + (["--arm-arg", "generate=1"] if generate else []) + (["--preset-baseline", "none"] if base_points_off else [])


def run_compares(root: str) -> None:
    runs = _runs(root)
    seeds = sorted(set(runs["baseline"]) & set(runs["sasp"]))
    best = max(seeds, key=lambda s: runs["sasp"][s]["final"]["giou"])  # the saved model is the final one
    jobs = [(s, "") for s in seeds] + [(best, "generate")] + [(s, "pointsoff") for s in seeds]
    for seed, kind in jobs:
        out = os.path.join(root, f"compare-{kind + '-' if kind else ''}seed{seed}")
        if os.path.isfile(os.path.join(out, "summary.json")):
            continue
        sasp_model = os.path.join(runs["sasp"][seed]["folder"], "model")
        # pointsoff: the SasP-arm model without its points (baseline) vs with them (candidate)
        base = sasp_model if kind == "pointsoff" else os.path.join(runs["baseline"][seed]["folder"], "model")
        cmd = compare_command(base, sasp_model, out, kind == "generate", kind == "pointsoff")
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


# --------------------------------------------------------------------------- rows -> numbers


def _rows(folder: str) -> Dict[str, Dict[int, Dict[str, Any]]]:
    from sasp.evaluate.rows import read_rows

    rows = read_rows(os.path.join(folder, "samples.jsonl"))
    by: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for r in rows:  # arm names: "baseline" / "candidate", "-sasp" appended when SasP is on
        by.setdefault("sasp" if r["arm"].startswith("candidate") else "baseline", {})[int(r["index"])] = r
    return by


def _scores(rows: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    from sasp.metrics import ciou_from_counts, giou_from_scores, sample_scores

    s, i, u = sample_scores([r["intersection"] for r in rows], [r["union"] for r in rows],
                            [r["target_empty"] for r in rows], [r["pred_has_object"] for r in rows])
    return {"giou": float(giou_from_scores(s)), "ciou": float(ciou_from_counts(i, u)), "n": len(rows)}


def arm_numbers(rows: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    from sasp.data.synthetic import TIERS

    ordered = [rows[i] for i in sorted(rows)]
    target = [r for r in ordered if r["has_target"]]
    out = {"all": _scores(ordered), "target": _scores(target)}
    out["tiers"] = {t: _scores([r for r in ordered if TIERS[int(r["index"]) % len(TIERS)] == t])["giou"] for t in TIERS}
    fp = [r for r in ordered if not r["has_target"]]
    out["false_premise_empty_mask"] = sum(bool(r["pred_empty"]) for r in fp) / max(len(fp), 1)
    return out


def pooled_difference(pairs: List[Dict[str, Dict[int, Dict[str, Any]]]], subset: str, resamples: int = 10000,
                      seed: int = 0) -> Dict[str, Any]:
    """gIoU difference (SasP - baseline) over all seeds' paired rows; percentile bootstrap of pairs."""
    from sasp.metrics import sample_scores

    diffs = []
    for by in pairs:
        idx = [i for i in sorted(by["baseline"]) if subset == "all" or by["baseline"][i]["has_target"]]
        score = {}
        for arm in ("baseline", "sasp"):
            rs = [by[arm][i] for i in idx]
            score[arm] = sample_scores([r["intersection"] for r in rs], [r["union"] for r in rs],
                                       [r["target_empty"] for r in rs], [r["pred_has_object"] for r in rs])[0]
        diffs.append(score["sasp"] - score["baseline"])
    d = np.concatenate(diffs)
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"delta_giou": float(d.mean()), "ci95": [float(lo), float(hi)], "pairs": int(d.size),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}


def _spread(xs: List[float]) -> Dict[str, float]:
    return {"mean": statistics.mean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "values": xs}


# --------------------------------------------------------------------------- similarity maps


def point_analysis(model_dir: str, samples: Sequence[Any], batch: int = 8) -> Dict[str, float]:
    """Where SasP's points land on ``samples`` (those with a target), teacher-forced."""
    import torch

    from sasp import SasPConfig, similarity_as_points
    from sasp.data import load_image
    from sasp.data.base import instruction_for
    from sasp.models.seg_llava import load_model

    model, proc = load_model(model_dir)
    model.eval()
    cfg = model.config.sasp_config() or SasPConfig(num_points=30, t_pos=0.8, t_neg=0.2, down_sample=1).replace(
        geometry=model.config.image_geometry, crop_size=int(model.config.vision_config.image_size))
    stats: Dict[str, List[float]] = {k: [] for k in ("pos_in", "neg_in", "n_pos", "n_neg", "auc", "peak_in",
                                                     "target_frac", "dtoc_shift_px", "cell_px")}
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            images = [load_image(s.image) for s in chunk]
            inputs = proc(images=images, prompts=[instruction_for(s) for s in chunk],
                          answers=["Sure, [SEG]."] * len(chunk))
            out = model.segment(**inputs, max_new_tokens=0)
            hw = [list(im.shape[:2]) for im in images]
            pts, labels, discrete = similarity_as_points(out.similarity, hw, cfg, model.grid_hw)
            for row, (s, im) in enumerate(zip(chunk, images)):
                tgt = np.asarray(s.target()) == 1
                xy = pts[row].round().long().numpy()
                xy[:, 0] = xy[:, 0].clip(0, im.shape[1] - 1)
                xy[:, 1] = xy[:, 1].clip(0, im.shape[0] - 1)
                inside = tgt[xy[:, 1], xy[:, 0]]
                lab = labels[row].numpy()
                stats["target_frac"].append(float(tgt.mean()))  # chance level of pos_in / neg_in
                kept = lab != -1
                shift = (pts[row] - discrete[row].to(pts.dtype)).norm(dim=-1).numpy()
                stats["dtoc_shift_px"].append(float(shift[kept].mean()) if kept.any() else float("nan"))
                stats["cell_px"].append(min(im.shape[:2]) / (model.grid_hw[0] / cfg.down_sample))
                stats["n_pos"].append(float((lab == 1).sum()))
                stats["n_neg"].append(float((lab == 0).sum()))
                if (lab == 1).any():
                    stats["pos_in"].append(float(inside[lab == 1].mean()))
                    stats["peak_in"].append(float(inside[lab == 1][0]))  # the highest cell
                if (lab == 0).any():
                    stats["neg_in"].append(float(inside[lab == 0].mean()))
                stats["auc"].append(_pixel_auc(out.similarity[row].numpy(), model.grid_hw, tgt, cfg.geometry))
    return {k: float(np.nanmean(v)) if v else float("nan") for k, v in stats.items()}


def _pixel_auc(sim: np.ndarray, grid: Sequence[int], target: np.ndarray, geometry: str) -> float:
    """AUC of the similarity (nearest token cell per pixel) at telling target pixels from the
    rest, over the pixels the token grid covers (the centre crop); NaN when the crop holds only
    one of the two."""
    h, w = target.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = target[top:top + side, left:left + side]
    rows = np.minimum((np.arange(side) * grid[0]) // side, grid[0] - 1)
    cols = np.minimum((np.arange(side) * grid[1]) // side, grid[1] - 1)
    value = sim.reshape(grid)[rows[:, None], cols[None, :]]
    pos, neg = value[crop], value[~crop]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]), kind="stable"), kind="stable") + 1.0
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


# --------------------------------------------------------------------------- plot


def plot_curves(runs: Dict[str, Dict[int, Dict[str, Any]]], trivial: Optional[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    colours = {"baseline": "tab:blue", "sasp": "tab:orange"}
    for arm, per_seed in runs.items():
        curves = [[(c["step"], c["giou"]) for c in rec["curve"]] for rec in per_seed.values()]
        for curve in curves:
            ax.plot(*zip(*curve), color=colours[arm], alpha=0.35, lw=1)
        steps = [s for s, _ in curves[0]]
        mean = [statistics.mean(c[k][1] for c in curves) for k in range(len(steps))]
        label = "baseline ([SEG] embedding)" if arm == "baseline" else "SasP ([SEG] embedding + points)"
        ax.plot(steps, mean, color=colours[arm], lw=2.2, marker="o", ms=3, label=f"{label}, mean of {len(curves)} seeds")
    if trivial is not None:
        ax.axhline(trivial, color="grey", ls=":", lw=1, label="all-foreground predictor")
    ax.set_xlabel("optimizer step (batch 8)")
    ax.set_ylabel("val gIoU (160 samples with a target)")
    ax.set_title("Tiny SegLlava on the synthetic task: baseline vs SasP", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(root: str, plot: Optional[str], points: bool) -> Dict[str, Any]:
    from sasp.data.synthetic import SyntheticReasonSeg

    runs = _runs(root)
    seeds = sorted(set(runs["baseline"]) & set(runs["sasp"]))
    per_seed: Dict[int, Dict[str, Any]] = {}
    pairs = []
    for seed in seeds:
        folder = os.path.join(root, f"compare-seed{seed}")
        by = _rows(folder)
        pairs.append(by)
        with open(os.path.join(folder, "summary.json")) as f:
            summ = json.load(f)
        per_seed[seed] = {arm: arm_numbers(by[arm]) for arm in ("baseline", "sasp")}
        per_seed[seed]["compare_delta_giou"] = [summ["delta_giou"], summ["delta_giou_ci"]]
        per_seed[seed]["compare_delta_ciou"] = [summ["delta_ciou"], summ["delta_ciou_ci"]]
        per_seed[seed]["val"] = {arm: {"final": runs[arm][seed]["final"]["giou"], "best": runs[arm][seed]["best_giou"],
                                       "seconds": runs[arm][seed]["seconds"]} for arm in ("baseline", "sasp")}
    table = {arm: {key: _spread([per_seed[s][arm][sub][m] for s in seeds])
                   for key, sub, m in (("giou", "all", "giou"), ("ciou", "all", "ciou"),
                                       ("giou_target", "target", "giou"), ("ciou_target", "target", "ciou"))}
             for arm in ("baseline", "sasp")}
    for arm in ("baseline", "sasp"):
        table[arm]["tiers"] = {t: _spread([per_seed[s][arm]["tiers"][t] for s in seeds])
                               for t in per_seed[seeds[0]][arm]["tiers"]}
        table[arm]["val_final"] = _spread([per_seed[s]["val"][arm]["final"] for s in seeds])
    result: Dict[str, Any] = {
        "seeds": seeds, "per_seed": per_seed, "table": table,
        "delta_mean_of_seeds": _spread([per_seed[s]["compare_delta_giou"][0] for s in seeds]),
        "delta_pooled_all": pooled_difference(pairs, "all"),
        "delta_pooled_target": pooled_difference(pairs, "target"),
    }
    gen = [d for d in os.listdir(root) if d.startswith("compare-generate-seed") and
           os.path.isfile(os.path.join(root, d, "summary.json"))]
    if gen:
        with open(os.path.join(root, gen[0], "summary.json")) as f:
            g = json.load(f)
        by = _rows(os.path.join(root, gen[0]))
        result["generate"] = {"seed": int(gen[0].rsplit("seed", 1)[1]), **{arm: {
            "giou": g[role]["giou"], "ciou": g[role]["ciou"], "n_acc": g[role]["n_acc"], "t_acc": g[role]["t_acc"],
            "see_acc": g[role]["see_acc"],
            "fp_answered_without_seg": sum(not r["pred_has_object"] for r in by[arm].values() if not r["has_target"]),
            "target_answered_without_seg": sum(not r["pred_has_object"] for r in by[arm].values() if r["has_target"]),
        } for arm, role in (("baseline", "baseline"), ("sasp", "candidate"))}}
    off = {}
    for seed in seeds:
        path = os.path.join(root, f"compare-pointsoff-seed{seed}", "summary.json")
        if os.path.isfile(path):
            with open(path) as f:
                g = json.load(f)
            off[seed] = {"points_off_giou": g["baseline"]["giou"], "points_on_giou": g["candidate"]["giou"],
                         "delta": g["delta_giou"], "delta_ci": g["delta_giou_ci"]}
    result["sasp_model_points_off"] = off
    if points:
        test = SyntheticReasonSeg("test", size=TEST_SIZE)
        targets = [test[i] for i in range(len(test)) if test[i].has_target]
        result["points"] = {arm: {s: point_analysis(os.path.join(runs[arm][s]["folder"], "model"), targets)
                                  for s in seeds} for arm in ("baseline", "sasp")}
    if plot:
        trivial_path = os.path.join(root, "summary.json")
        trivial = None
        if os.path.isfile(trivial_path):
            with open(trivial_path) as f:
                trivial = json.load(f)["trivial"]["all_foreground"]["giou"]
        plot_curves(runs, trivial, plot)
    with open(os.path.join(root, "report.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["compare", "report"])
    p.add_argument("--run", required=True, help="run name under benchmarks/out/train_synthetic/")
    p.add_argument("--plot", help="report: write the val curves of both arms to this PNG")
    p.add_argument("--no-points", action="store_true", help="report: skip the similarity-map analysis")
    a = p.parse_args(argv)
    root = os.path.join(OUT, a.run)
    if a.mode == "compare":
        run_compares(root)
    else:
        res = report(root, a.plot, not a.no_points)
        print(json.dumps({k: res[k] for k in res if k != "per_seed"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
