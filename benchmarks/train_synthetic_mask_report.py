"""The mask-prompt arms of the synthetic experiment against its baseline and points-only arms.

``train_synthetic.py run`` trains the baseline and the points-only SasP arm (``main800``);
the same driver with ``--arms sasp --spatial-prompt points+mask`` (``mask800``) or ``mask``
(``maskonly800``) trains the arms where SAM also (or only) gets the similarity map as its
dense mask prompt, from the same weights and data order. This script evaluates them:

    python benchmarks/train_synthetic_mask_report.py compare   # sasp compare per seed and arm
    python benchmarks/train_synthetic_mask_report.py report --plot benchmarks/out/train_synthetic/mask800/curves.png

``compare`` runs ``sasp compare`` on the held-out synthetic test set (200 samples,
teacher-forced "Sure, [SEG]." as LISA's validation) with each mask-arm model as
``--candidate`` and, as ``--baseline``, the same seed's baseline model (``compare-vsbaseline-
seed<s>``) and the same seed's points-only model (``compare-vspoints-seed<s>``); every
checkpoint runs with the SasP settings saved in it. ``compare-promptoff-seed<s>`` evaluates
the mask-arm model itself with SasP off (``--preset-baseline none``: SAM gets neither the map
nor points) against the same model as trained: how much SAM uses what it was trained with. ``report`` writes ``report.json`` in each
mask run's folder:

- per arm: test gIoU / cIoU over the 200 samples (LISA's protocol) and over the 160 with a
  target, per seed and as mean and sample standard deviation over seeds; the baseline and
  points-only numbers are re-measured in the compares and checked against ``main800``'s;
- paired differences (mask arm - reference): per seed (``sasp compare``'s percentile
  bootstrap over the seed's samples, 2000 resamples) and pooled over seeds (all paired rows
  resampled together, 10,000 resamples, seed 0);
- the val gIoU curves (mean and spread over seeds per evaluation step), training seconds, and
  whether every run started from the same weights and data order as main800's of its seed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out", "train_synthetic")
TEST_SIZE = 200
REFERENCE = "main800"
MASK_RUNS = {"points+mask": "mask800", "mask": "maskonly800"}
VERSUS = {"baseline": "vsbaseline", "points": "vspoints"}


def _run(name: str, arm: str, seed: int) -> Optional[Dict[str, Any]]:
    """run.json of ``<name>/<arm>-seed<seed>`` with its folder, or None while it is missing."""
    folder = os.path.join(OUT, name, f"{arm}-seed{seed}")
    if not os.path.isfile(os.path.join(folder, "run.json")):
        return None
    with open(os.path.join(folder, "run.json")) as f:
        return {**json.load(f), "folder": folder}


def _models(seed: int) -> Dict[str, Optional[Dict[str, Any]]]:
    """The runs of one seed: baseline and points from main800, the mask arms from their runs."""
    runs = {"baseline": _run(REFERENCE, "baseline", seed), "points": _run(REFERENCE, "sasp", seed)}
    runs.update({arm: _run(name, "sasp", seed) for arm, name in MASK_RUNS.items()})
    return runs


def run_compares(seeds: List[int]) -> None:
    for seed in seeds:
        runs = _models(seed)
        for arm, name in MASK_RUNS.items():
            if runs[arm] is None:
                continue
            model = os.path.join(runs[arm]["folder"], "model")
            # promptoff: the mask-arm model with SasP off (SAM gets neither map nor points) vs as trained
            for ref, tag in (*VERSUS.items(), (arm, "promptoff")):
                out = os.path.join(OUT, name, f"compare-{tag}-seed{seed}")
                if runs[ref] is None or os.path.isfile(os.path.join(out, "summary.json")):
                    continue
                cmd = [sys.executable, "-m", "sasp", "compare", "--data", "synthetic", "--split", "test",
                       "--data-arg", f"size={TEST_SIZE}", "--baseline", os.path.join(runs[ref]["folder"], "model"),
                       "--candidate", model, "--out", out, "--device", "cpu", "--batch-size", "8", "--quiet"]
                cmd += ["--preset-baseline", "none"] if tag == "promptoff" else []
                print(" ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _rows(folder: str) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """Rows of a compare folder by role ("baseline" / "candidate") and sample index."""
    from sasp.evaluate.rows import read_rows

    by: Dict[str, Dict[int, Dict[str, Any]]] = {"baseline": {}, "candidate": {}}
    for r in read_rows(os.path.join(folder, "samples.jsonl")):
        by["candidate" if r["arm"].startswith("candidate") else "baseline"][int(r["index"])] = r
    return by


def _per_sample(rows: List[Dict[str, Any]]) -> np.ndarray:
    from sasp.metrics import sample_scores

    return np.asarray(sample_scores([r["intersection"] for r in rows], [r["union"] for r in rows],
                                    [r["target_empty"] for r in rows], [r["pred_has_object"] for r in rows])[0])


def _scores(rows: Dict[int, Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    from sasp.metrics import ciou_from_counts, giou_from_scores

    out = {}
    for subset in ("all", "target"):
        rs = [rows[i] for i in sorted(rows) if subset == "all" or rows[i]["has_target"]]
        out[subset] = {"giou": giou_from_scores(_per_sample(rs)),
                       "ciou": float(ciou_from_counts([r["intersection"] for r in rs], [r["union"] for r in rs])),
                       "n": len(rs)}
    return out


def _pooled(pairs: List[Dict[str, Dict[int, Dict[str, Any]]]], subset: str, resamples: int = 10000) -> Dict[str, Any]:
    """gIoU difference (candidate - baseline) over every seed's paired rows, percentile bootstrap."""
    diffs = []
    for by in pairs:
        idx = [i for i in sorted(by["baseline"]) if subset == "all" or by["baseline"][i]["has_target"]]
        diffs.append(_per_sample([by["candidate"][i] for i in idx]) - _per_sample([by["baseline"][i] for i in idx]))
    d = np.concatenate(diffs)
    boot = d[np.random.default_rng(0).integers(0, d.size, size=(resamples, d.size))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"delta_giou": float(d.mean()), "ci95": [float(lo), float(hi)], "pairs": int(d.size),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}


def _spread(xs: List[float]) -> Dict[str, Any]:
    return {"mean": statistics.mean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "values": xs}


def _curve(recs: List[Dict[str, Any]]) -> Dict[str, Any]:
    steps = [c["step"] for c in recs[0]["curve"]]
    return {"steps": steps, **{k: [f([r["curve"][i]["giou"] for r in recs]) for i in range(len(steps))]
                               for k, f in (("mean", statistics.mean),
                                            ("sd", lambda v: statistics.stdev(v) if len(v) > 1 else 0.0))}}


def report(seeds: List[int], plot: Optional[str]) -> Dict[str, Dict[str, Any]]:
    with open(os.path.join(OUT, REFERENCE, "report.json")) as f:
        ref_report = json.load(f)
    runs = {s: _models(s) for s in seeds}
    results = {}
    for arm, name in MASK_RUNS.items():
        mine = [s for s in seeds if runs[s][arm] is not None and all(
            os.path.isfile(os.path.join(OUT, name, f"compare-{t}-seed{s}", "summary.json")) for t in VERSUS.values())]
        if not mine:
            continue
        per_seed: Dict[int, Dict[str, Any]] = {}
        pairs: Dict[str, list] = {ref: [] for ref in VERSUS}
        for s in mine:
            rec: Dict[str, Any] = {"test": {}, "delta": {}, "reference_check": {}}
            for ref, tag in VERSUS.items():
                folder = os.path.join(OUT, name, f"compare-{tag}-seed{s}")
                by = _rows(folder)
                pairs[ref].append(by)
                with open(os.path.join(folder, "summary.json")) as f:
                    summ = json.load(f)
                rec["delta"][ref] = {"giou": [summ["delta_giou"], summ["delta_giou_ci"]],
                                     "ciou": [summ["delta_ciou"], summ["delta_ciou_ci"]],
                                     "wins_losses_ties": [summ["wins"], summ["losses"], summ["ties"]]}
                rec["test"][arm] = _scores(by["candidate"])
                rec["test"][ref] = _scores(by["baseline"])
                theirs = ref_report["per_seed"].get(str(s), {}).get("baseline" if ref == "baseline" else "sasp")
                if theirs is not None:  # main800's own numbers for the same model: the re-run must match
                    rec["reference_check"][ref] = max(abs(theirs[sub][m] - rec["test"][ref][sub][m])
                                                      for sub in ("all", "target") for m in ("giou", "ciou"))
            off = os.path.join(OUT, name, f"compare-promptoff-seed{s}", "summary.json")
            if os.path.isfile(off):
                with open(off) as f:
                    summ = json.load(f)
                rec["prompt_off"] = {"off_giou": summ["baseline"]["giou"], "on_giou": summ["candidate"]["giou"],
                                     "delta_giou": [summ["delta_giou"], summ["delta_giou_ci"]]}
            rec["val"] = {a: {"final": runs[s][a]["final"]["giou"], "best": runs[s][a]["best_giou"],
                              "seconds": runs[s][a]["seconds"]} for a in ("baseline", "points", arm)}
            rec["same_start_as_main800"] = {
                k: len({runs[s][a][k] for a in ("baseline", "points", arm)}) == 1 for k in ("init_hash", "order_hash")}
            per_seed[s] = rec
        table = {a: {f"{m}{'' if sub == 'all' else '_target'}": _spread([per_seed[s]["test"][a][sub][m] for s in mine])
                     for sub in ("all", "target") for m in ("giou", "ciou")} for a in ("baseline", "points", arm)}
        for a in table:
            table[a]["val_final"] = _spread([per_seed[s]["val"][a]["final"] for s in mine])
            table[a]["train_seconds"] = _spread([per_seed[s]["val"][a]["seconds"] for s in mine])
        result = {"arm": arm, "seeds": mine, "table": table, "per_seed": per_seed,
                  "delta_mean_of_seeds": {ref: _spread([per_seed[s]["delta"][ref]["giou"][0] for s in mine]) for ref in VERSUS},
                  "delta_pooled_all": {ref: _pooled(pairs[ref], "all") for ref in VERSUS},
                  "delta_pooled_target": {ref: _pooled(pairs[ref], "target") for ref in VERSUS},
                  "val_curves": {a: _curve([runs[s][a] for s in mine]) for a in ("baseline", "points", arm)}}
        with open(os.path.join(OUT, name, "report.json"), "w") as f:
            json.dump(result, f, indent=1)
        results[arm] = result
    if plot and results:
        _plot(results, plot)
    return results


def _plot(results: Dict[str, Dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for res in results.values():
        for a, c in res["val_curves"].items():
            curves.setdefault(a, (c, len(res["seeds"])))
    colours = {"baseline": "tab:blue", "points": "tab:orange", "points+mask": "tab:green", "mask": "tab:red"}
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    for a, (c, n) in curves.items():
        mean, sd = np.asarray(c["mean"]), np.asarray(c["sd"])
        ax.plot(c["steps"], mean, color=colours[a], lw=2, marker="o", ms=3, label=f"{a}, mean of {n} seeds")
        ax.fill_between(c["steps"], mean - sd, mean + sd, color=colours[a], alpha=0.15)
    ax.set_xlabel("optimizer step (batch 8)")
    ax.set_ylabel("val gIoU (160 samples with a target)")
    ax.set_title("Tiny SegLlava, synthetic task: what SAM gets from the similarity map", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["compare", "report"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--plot", help="report: write the val gIoU curves of every arm to this PNG")
    a = p.parse_args(argv)
    if a.mode == "compare":
        run_compares(a.seeds)
    else:
        res = report(a.seeds, a.plot)
        print(json.dumps({arm: {k: r[k] for k in ("seeds", "table", "delta_mean_of_seeds", "delta_pooled_all",
                                                  "delta_pooled_target")} for arm, r in res.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
