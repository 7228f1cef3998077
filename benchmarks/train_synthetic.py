"""Train the tiny SegLlava from scratch on the synthetic task: baseline vs SasP, several seeds.

Every (arm, seed) run starts from the same weights and sees the same samples in the same order
as the other arm's run of that seed (both come from the seed alone; the driver checks it from
each run's initial-weight hash and data-order log). Validation is LISA's: teacher-forced
"Sure, [SEG]." on the fixed synthetic val set, gIoU / cIoU of the samples with a target, every
``--eval-every`` steps; the all-foreground and all-background predictors give the floor.

    python benchmarks/train_synthetic.py run              # both arms x seeds 0 1 2 (~13 min per run, 2 at a time)
    python benchmarks/train_synthetic.py pilot            # baseline, seed 0, a few minutes
    python benchmarks/train_synthetic.py step-share       # SasP's share of one training step

The tiny model's token grid is 12 x 12: READ-7B's down_sample 2 (tuned on a 24 x 24 grid, 144
selection cells) would leave 36 cells for 30 points; ``--down-sample 1`` keeps 144 cells (the
setting of the reported experiment, ``--steps 800 --down-sample 1``). Every run saves its final
model (``<arm>-seed<s>/model/``, safetensors + processor; ``config.sasp`` is the arm).

``--spatial-prompt points+mask`` (or ``mask``) gives the sasp arm the similarity map as SAM's
dense mask prompt; with ``--arms sasp`` and the reported experiment's other options it adds
that arm beside an earlier run (same seeds, same start and data order: compare the runs'
``init_hash`` / ``order_hash`` in run.json):

    python benchmarks/train_synthetic.py run --arms sasp --spatial-prompt points+mask --steps 800 --down-sample 1 --name mask800

Output (untracked): ``benchmarks/out/train_synthetic/<name>/``: ``<arm>-seed<s>/curve.json``
(val gIoU per evaluation), ``log.json`` (training losses), ``data_order/``, ``run.json``;
``summary.json`` (final and best gIoU per run, per-arm mean and spread, the trivial
predictors, per-tier gIoU of the final models, and the identical-start checks).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "train_synthetic")
ARMS = ("baseline", "sasp")


def _hash_params(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_one(arm: str, seed: int, opts: Dict[str, Any], folder: str) -> Dict[str, Any]:
    """One training run (in its own process, ``opts["threads"]`` threads); returns its record."""
    torch.set_num_threads(opts["threads"])
    from transformers import TrainingArguments

    from sasp.data.synthetic import TIERS, SyntheticReasonSeg
    from sasp.train.collator import SegCollator
    from sasp.train.model import TrainableSettings, build_model, configure_trainable, resolve_sasp, set_arm
    from sasp.train.trainer import SegTrainer
    from sasp.train.validation import GIoUCallback, evaluate_giou

    sasp = resolve_sasp(opts["preset"], **opts.get("sasp_fields", {})) if arm == "sasp" else None
    model, processor = build_model("tiny", seed=seed)
    set_arm(model, sasp)
    configure_trainable(model, TrainableSettings(True, True, opts["train_sam_encoder"]))
    init_hash = _hash_params(model)
    train = SyntheticReasonSeg("train", size=opts["train_size"], seed=0)
    val = SyntheticReasonSeg("val", size=opts["val_size"])
    val_samples = [val[i] for i in range(len(val))]
    curve = GIoUCallback(processor, val_samples, opts["eval_every"], os.path.join(folder, "curve.json"), opts["eval_batch"])
    args = TrainingArguments(
        output_dir=folder, max_steps=opts["steps"], per_device_train_batch_size=opts["batch_size"],
        learning_rate=opts["lr"], warmup_steps=opts["warmup"], lr_scheduler_type="linear", weight_decay=0.0,
        adam_beta2=0.95, max_grad_norm=1.0, seed=seed, logging_steps=opts["log_every"], save_strategy="no",
        report_to=[], remove_unused_columns=False, use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=opts["workers"], dataloader_pin_memory=False,
    )
    trainer = SegTrainer(model=model, args=args, train_dataset=train, data_collator=SegCollator(processor),
                         callbacks=[curve], run_config={"arm": arm, "sasp": sasp, "seed": seed, "opts": opts})
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model.save_pretrained(os.path.join(folder, "model"))  # safetensors; config.sasp is the arm
    processor.save_pretrained(os.path.join(folder, "model"))
    tiers = {t: evaluate_giou(model, processor, [s for s in val_samples if s.meta.get("tier") == t], opts["eval_batch"])
             for t in TIERS if t != "false_premise"}
    logs = [h for h in trainer.state.log_history if "loss" in h]
    with open(os.path.join(folder, "log.json"), "w") as f:
        json.dump(logs, f, indent=1)
    with open(os.path.join(folder, "data_order", "rank0.jsonl")) as f:
        order_hash = hashlib.sha256(f.read().encode()).hexdigest()[:16]
    record = {"arm": arm, "seed": seed, "sasp": None if sasp is None else dataclasses.asdict(sasp), "seconds": seconds, "init_hash": init_hash, "order_hash": order_hash,
              "curve": curve.curve, "final": curve.curve[-1], "best_giou": max(c["giou"] for c in curve.curve),
              "per_tier": tiers, "final_loss": logs[-1] if logs else None}
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump(record, f, indent=1, default=str)
    return record


def _trivial(opts: Dict[str, Any]) -> Dict[str, Any]:
    from sasp.data.synthetic import SyntheticReasonSeg
    from sasp.train.validation import trivial_scores

    return trivial_scores(SyntheticReasonSeg("val", size=opts["val_size"]))


def _spread(values: List[float]) -> Dict[str, float]:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def experiment(arms: List[str], seeds: List[int], opts: Dict[str, Any], name: str, jobs: int) -> Dict[str, Any]:
    root = os.path.join(OUT, name)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "options.json"), "w") as f:
        json.dump({"arms": arms, "seeds": seeds, **opts}, f, indent=1)
    runs: List[Dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_one, arm, seed, opts, os.path.join(root, f"{arm}-seed{seed}")): (arm, seed)
                   for seed in seeds for arm in arms}
        for fut in cf.as_completed(futures):
            try:
                rec = fut.result()
            except Exception as err:  # one failed run must not take the others down
                arm, seed = futures[fut]
                print(f"{arm:>8} seed {seed}: FAILED: {type(err).__name__}: {err}", flush=True)
                continue
            runs.append(rec)
            print(f"{rec['arm']:>8} seed {rec['seed']}: final gIoU {rec['final']['giou']:.4f} "
                  f"(best {rec['best_giou']:.4f}) in {rec['seconds']:.0f} s", flush=True)
    summary: Dict[str, Any] = {"options": {"arms": arms, "seeds": seeds, **opts}, "trivial": _trivial(opts), "arms": {}}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        summary["arms"][arm] = {
            "final_giou": _spread([r["final"]["giou"] for r in mine]),
            "final_ciou": _spread([r["final"]["ciou"] for r in mine]),
            "best_giou": _spread([r["best_giou"] for r in mine]),
            "seconds": _spread([r["seconds"] for r in mine]),
            "runs": {r["seed"]: {k: r[k] for k in ("final", "best_giou", "per_tier", "seconds")} for r in mine},
        }
    checks = {}
    for seed in seeds:
        same = [r for r in runs if r["seed"] == seed]
        checks[seed] = {"same_init": len({r["init_hash"] for r in same}) == 1,
                        "same_data_order": len({r["order_hash"] for r in same}) == 1}
    summary["identical_start"] = checks
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(json.dumps({"trivial": summary["trivial"], "identical_start": checks,
                      **{a: summary["arms"][a]["final_giou"] for a in summary["arms"]}}, indent=1, default=str))
    return summary


def step_share(batch_size: int, repeats: int, preset: str, seed: int, fields: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Forward + backward of one batch (same model, same batch, one thread pinned to one core)
    in three settings, interleaved in rotating order: SasP off; SasP computed but not given to
    SAM (``sam_prompt="text"``: the cost of selection + DtoC and their backward); SasP on
    (READ: SAM also decodes the points). Shares are of the SasP-on step."""
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from sasp.data.synthetic import SyntheticReasonSeg
    from sasp.train.collator import SegCollator
    from sasp.train.model import TrainableSettings, build_model, configure_trainable, resolve_sasp

    model, processor = build_model("tiny", seed=seed)
    configure_trainable(model, TrainableSettings(True, True, True))
    model.train()
    reader = SyntheticReasonSeg("train", size=batch_size * 4, seed=seed)
    samples = [s for s in (reader[i] for i in range(len(reader))) if s.has_target][:batch_size]
    batch = SegCollator(processor)(samples)
    batch.pop("sample_ids")
    n_seg = sum(int(g.shape[0]) for g in batch["gt_masks"])
    cfg = resolve_sasp(preset, **(fields or {}))
    modes = {"off": (None, "both"), "points_only_computed": (cfg, "text"), "on": (cfg, "both")}

    def step(mode: str) -> float:
        model.config.with_sasp(*modes[mode])
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        return time.perf_counter() - t0

    names = list(modes)
    for name in names * 2:  # warm-up
        step(name)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % 3:] + names[: r % 3]:
            times[name].append(step(name))
    med = {n: statistics.median(t) for n, t in times.items()}

    def q(xs: List[float]) -> List[float]:
        qs = statistics.quantiles(xs, n=4)
        return [qs[0], qs[2]]

    # the op alone on the model's own similarity shape: [n_SEG, N_p] -> points, forward + backward
    from sasp import similarity_as_points

    sim = torch.randn(n_seg, model.num_patches, requires_grad=True)
    hw = batch["image_hw"][[i for i, g in enumerate(batch["gt_masks"]) for _ in range(int(g.shape[0]))]]
    model.config.with_sasp(cfg)
    model_cfg = model.config.sasp_config()  # the preset with this model's geometry and crop size

    def op() -> float:
        t0 = time.perf_counter()
        similarity_as_points(sim, hw, model_cfg, model.grid_hw).refined.sum().backward()
        return time.perf_counter() - t0

    op_ms = 1e3 * statistics.median([op() for _ in range(max(repeats, 50))])
    ratio = [b / a for a, b in zip(times["off"], times["on"])]
    op = [(b - a) / c for a, b, c in zip(times["off"], times["points_only_computed"], times["on"])]
    out = {"batch_size": batch_size, "seg_tokens": n_seg, "repeats": repeats, "preset": preset,
           "sasp": dataclasses.asdict(cfg), "threads": 1,
           **{f"{n}_ms": 1e3 * m for n, m in med.items()},
           "ratio_on_off": statistics.median(ratio), "ratio_on_off_iqr": q(ratio),
           "sasp_arm_share": (med["on"] - med["off"]) / med["on"],
           "sasp_op_share_by_difference": statistics.median(op), "sasp_op_share_by_difference_iqr": q(op),
           "sasp_op_alone_ms": op_ms, "sasp_op_alone_share": op_ms / (1e3 * med["on"]),
           "torch": torch.__version__}
    print(json.dumps(out, indent=1))
    return out


def _options(a: argparse.Namespace) -> Dict[str, Any]:
    return {"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "warmup": a.warmup, "eval_every": a.eval_every,
            "log_every": a.log_every, "train_size": a.train_size, "val_size": a.val_size, "eval_batch": a.eval_batch,
            "preset": a.preset, "sasp_fields": {k: v for k, v in (("num_points", a.num_points), ("t_pos", a.t_pos),
            ("t_neg", a.t_neg), ("down_sample", a.down_sample), ("spatial_prompt", a.spatial_prompt),
            ("mask_range", None if a.mask_range is None else tuple(a.mask_range))) if v is not None},
            "threads": a.threads, "workers": a.workers, "train_sam_encoder": not a.frozen_sam_encoder}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["run", "pilot", "step-share"])
    p.add_argument("--arms", nargs="+", choices=ARMS, help="default: both (run), baseline (pilot)")
    p.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 (run), 0 (pilot)")
    p.add_argument("--steps", type=int, default=900, help="optimizer steps per run (default 900)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--train-size", type=int, default=8000, help="synthetic train samples (one pass: steps x batch)")
    p.add_argument("--val-size", type=int, default=200)
    p.add_argument("--eval-batch", type=int, default=16)
    p.add_argument("--preset", default="read-7b", help="SasP preset of the sasp arm")
    p.add_argument("--num-points", type=int, help="sasp arm: K, overrides the preset")
    p.add_argument("--t-pos", type=float, help="sasp arm: positive threshold, overrides the preset")
    p.add_argument("--t-neg", type=float, help="sasp arm: negative threshold, overrides the preset")
    p.add_argument("--down-sample", type=int, help="sasp arm: grid down-sampling before selection, overrides "
                   "the preset (the tiny model's grid is 12x12: 1 keeps 144 cells, as READ-7B's 24x24 / 2)")
    p.add_argument("--spatial-prompt", choices=["points", "mask", "points+mask"], help="sasp arm: what SAM gets "
                   "from the similarity map (points, the map as its dense mask prompt, or both), overrides the preset")
    p.add_argument("--mask-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="sasp arm: logit range of the mask prompt, overrides the preset")
    p.add_argument("--frozen-sam-encoder", action="store_true", help="keep SAM's (random) image encoder frozen, as LISA")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per run")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one per core)")
    p.add_argument("--name", help="output subfolder (default: the mode and the time)")
    p.add_argument("--repeats", type=int, default=20, help="step-share: timed steps per arm")
    a = p.parse_args(argv)
    if a.mode == "step-share":
        step_share(a.batch_size, a.repeats, a.preset, seed=0, fields=_options(a)["sasp_fields"])
        return 0
    pilot = a.mode == "pilot"
    arms = a.arms or (["baseline"] if pilot else list(ARMS))
    seeds = a.seeds or ([0] if pilot else [0, 1, 2])
    name = a.name or f"{a.mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment(arms, seeds, _options(a), name, a.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
