"""``sasp train``: the command line of ``sasp.train``.

    sasp train --model tiny --data synthetic --data-arg size=2000 --out runs/tiny --max-steps 200 --cpu
    torchrun --nproc-per-node 8 -m sasp train --model ./llava-1.5-7b-hf ...     # one process per GPU
    accelerate launch -m sasp train ... --deepspeed ds_zero2.json

Exit codes: 0 done, 2 bad input (one line on stderr), 130 interrupted (run the same command
with ``--resume auto`` to continue from the last checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, Optional

from sasp.data import readers  # the registry of data kinds, shared with sasp compare
from sasp.data.base import DatasetError, Reader, SampleError
from sasp.data.readers import parse_option

HELP = """\
Fine-tune a SegLlava <SEG> model with LISA's losses (CE + 2 BCE + 0.5 Dice), in the baseline
arm (SAM prompted with the [SEG] embedding) or the SasP arm (--arm sasp: READ's Similarity-as-
Points as extra point prompts). transformers' Trainer runs it, so torchrun, accelerate launch
and --deepspeed work unchanged. Every checkpoint holds sasp_run.json (arm, SasP settings,
data, seeds, arguments, model configuration); --resume auto continues from the last one.

By default the LLM, lm_head, embeddings, [SEG] projection and SAM's mask decoder train and
the vision tower, projector and SAM's encoders are frozen (LISA); --lora-r R trains LoRA
adapters on the LLM's attention instead of the full LLM (LISA: --lora-r 8) and writes the
merged model to <out>/merged at the end.

examples:
  sasp train --model tiny --data synthetic --data-arg size=8000 --out runs/tiny --cpu \\
      --train-vision-tower --train-projector --train-sam-encoder --batch-size 8 \\
      --max-steps 900 --lr 1e-3 --warmup-steps 30 --val-data synthetic --eval-steps 100
  sasp train ...same... --out runs/tiny-sasp --arm sasp --sasp-preset read-7b
  sasp train ...same... --out runs/tiny-mask --arm sasp --spatial-prompt points+mask
  torchrun --nproc-per-node 8 -m sasp train --model ./seg-llava-7b --data reasonseg \\
      --root ./dataset/reason_seg/ReasonSeg --out runs/lisa7b-sasp --arm sasp --lora-r 8 --bf16 \\
      --batch-size 2 --grad-accum 10 --max-steps 5000 --lr 3e-4 --warmup-steps 100
"""

RUN_IDENTITY = ("arm", "sasp", "sam_prompt", "model_source", "data", "seed", "lora", "trainable")
"""Fields of sasp_run.json a resumed run must share with the checkpoint it resumes."""


class CommandError(ValueError):
    """Bad input to ``sasp train``: printed as one line, exit code 2."""


def build_reader(kind: str, root: Optional[str], split: Optional[str], data_args: Dict[str, Any], limit: Optional[int] = None) -> Reader:
    """A reader from ``--data`` / ``--root`` / ``--split`` / ``--data-arg`` / ``--limit``."""
    try:
        reader = readers.open_reader(kind, root, split, data_args)
    except TypeError as err:
        raise CommandError(f"--data {kind}: {err} (check --root / --split / --data-arg)") from None
    if limit is not None:
        if limit < 1:
            raise CommandError(f"--limit must be >= 1, got {limit}")
        from torch.utils.data import Subset

        reader = Subset(reader, range(min(limit, len(reader))))
    return reader


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    m = p.add_argument_group("model")
    m.add_argument("--model", default="tiny", help="'tiny' (random, offline), a seg_llava folder or a LLaVA-1.5 folder")
    m.add_argument("--sam-checkpoint", metavar="PTH", help="segment_anything checkpoint for a LLaVA-1.5 --model")
    m.add_argument("--lora-r", type=int, default=0, metavar="R", help="LoRA rank on the LLM's attention; 0: full fine-tuning (default)")
    m.add_argument("--lora-alpha", type=int, default=16)
    m.add_argument("--lora-dropout", type=float, default=0.05)
    m.add_argument("--lora-targets", default="q_proj,v_proj", help="LLM attention modules for LoRA (default q_proj,v_proj)")
    m.add_argument("--train-vision-tower", action="store_true", help="train CLIP too (LISA freezes it)")
    m.add_argument("--train-projector", action="store_true", help="train the multimodal projector too (LISA freezes it)")
    m.add_argument("--train-sam-encoder", action="store_true", help="train SAM's image encoder too (LISA freezes it)")
    a = p.add_argument_group("arm")
    a.add_argument("--arm", choices=["baseline", "sasp"], default="baseline")
    a.add_argument("--sasp-preset", default="read-7b", help="SasP preset of --arm sasp: read-7b (default), read-13b")
    a.add_argument("--num-points", type=int, help="SasP: points per [SEG] (overrides the preset)")
    a.add_argument("--t-pos", type=float, help="SasP: positive threshold")
    a.add_argument("--t-neg", type=float, help="SasP: negative threshold")
    a.add_argument("--down-sample", type=int, help="SasP: token-grid down-sampling")
    a.add_argument("--dtoc-radius", type=int, help="SasP: DtoC window radius")
    a.add_argument("--spatial-prompt", choices=["points", "mask", "points+mask"],
                   help="SasP: what SAM gets from the similarity map: points (READ, the presets' default), "
                        "mask (the map as SAM's dense mask prompt, UGround) or points+mask")
    a.add_argument("--mask-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="SasP mask prompt: the normalised map m becomes LO + (HI - LO) m (default -8 8: SAM's logits)")
    a.add_argument("--sam-prompt", choices=["both", "points"], default="both",
                   help="SasP: SAM gets its SasP prompts and the [SEG] embedding (both, READ) or the SasP prompts only")
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True, metavar="KIND", help=f"{', '.join(sorted(readers.DATA_KINDS))} or module:factory")
    d.add_argument("--root", metavar="PATH", help="dataset root folder")
    d.add_argument("--split", default="train", help="training split (default train)")
    d.add_argument("--limit", type=int, metavar="N", help="only the first N samples")
    d.add_argument("--data-arg", dest="data_args", action="append", type=parse_option, default=[], metavar="KEY=VALUE")
    d.add_argument("--val-data", metavar="KIND", help="validation reader (teacher-forced gIoU every --eval-steps)")
    d.add_argument("--val-split", default="val")
    d.add_argument("--val-data-arg", dest="val_data_args", action="append", type=parse_option, default=[], metavar="KEY=VALUE")
    d.add_argument("--val-limit", type=int, metavar="N")
    d.add_argument("--eval-steps", type=int, default=0, metavar="N", help="validate every N steps (0: never)")
    t = p.add_argument_group("training")
    t.add_argument("--out", required=True, metavar="DIR", help="output folder (checkpoints, logs, final model)")
    t.add_argument("--max-steps", type=int, required=True, metavar="N", help="optimizer steps")
    t.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (LISA: 3e-4)")
    t.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up, then linear decay (LISA: 100)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--batch-size", type=int, default=2, help="per device per micro-batch (LISA: 2)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (LISA: 10)")
    t.add_argument("--save-steps", type=int, default=500)
    t.add_argument("--save-total-limit", type=int)
    t.add_argument("--logging-steps", type=int, default=10)
    t.add_argument("--seed", type=int, default=0, help="initialisation of new modules and data order (same in both arms)")
    t.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (image loading)")
    t.add_argument("--bf16", action="store_true")
    t.add_argument("--fp16", action="store_true")
    t.add_argument("--deepspeed", metavar="JSON", help="DeepSpeed config file (e.g. ZeRO-2, as LISA)")
    t.add_argument("--resume", metavar="auto|DIR", help="continue from the last checkpoint in --out (auto) or from DIR")
    t.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to an ``ArgumentParser.add_subparsers()`` object."""
    p = subparsers.add_parser("train", help="fine-tune a <SEG> model, baseline or SasP arm",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    return configure_parser(p)


def _sasp_of(args: argparse.Namespace):
    from .model import resolve_sasp

    if args.arm == "baseline":
        if getattr(args, "spatial_prompt", None) or getattr(args, "mask_range", None):
            raise CommandError("--spatial-prompt and --mask-range need --arm sasp")
        return None
    mask_range = getattr(args, "mask_range", None)
    return resolve_sasp(args.sasp_preset, num_points=args.num_points, t_pos=args.t_pos, t_neg=args.t_neg,
                        down_sample=args.down_sample, dtoc_radius=args.dtoc_radius,
                        spatial_prompt=getattr(args, "spatial_prompt", None),
                        mask_range=tuple(mask_range) if mask_range else None)


def _fingerprint(reader: Any) -> Dict[str, Any]:
    inner = getattr(reader, "dataset", reader)
    fp = inner.fingerprint() if hasattr(inner, "fingerprint") else {"name": type(inner).__name__}
    return {**fp, "count": len(reader)}


def _resume_point(args: argparse.Namespace, run_config: Dict[str, Any]) -> Optional[str]:
    from transformers.trainer_utils import get_last_checkpoint

    from .trainer import jsonable, load_run_config

    if args.resume is None:
        if os.path.isdir(args.out) and get_last_checkpoint(args.out) is not None:
            raise CommandError(f"{args.out} already holds checkpoints: add --resume auto to continue, or use another --out")
        return None
    if args.resume == "auto":
        last = get_last_checkpoint(args.out) if os.path.isdir(args.out) else None
        if last is None:
            return None  # nothing to resume: start fresh
    else:
        last = args.resume
        if not os.path.isdir(last):
            raise CommandError(f"--resume: checkpoint folder not found: {last}")
    saved = load_run_config(last)
    new = json.loads(json.dumps(run_config, default=jsonable))
    diff = [k for k in RUN_IDENTITY if saved.get(k) != new.get(k)]
    if diff:
        raise CommandError(f"{last} was written by another run (differs in {', '.join(diff)}); use another --out")
    return last


def run(args: argparse.Namespace) -> int:
    """Run ``sasp train`` with parsed arguments; returns the exit code."""
    try:
        return _run(args)
    except (CommandError, DatasetError, SampleError, ValueError, ImportError) as err:
        print(f"sasp train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sasp train: interrupted; run the same command with --resume auto to continue", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from .collator import SegCollator
    from .model import LoraSettings, TrainableSettings, apply_lora, arm_name, build_model, configure_trainable, set_arm
    from .trainer import RUN_CONFIG_NAME, SegTrainer, jsonable
    from .validation import GIoUCallback

    if args.bf16 and args.fp16:
        raise CommandError("choose one of --bf16 and --fp16")
    if args.arm == "baseline" and args.sam_prompt != "both":
        raise CommandError("--sam-prompt points needs --arm sasp")
    sasp = _sasp_of(args)
    train = build_reader(args.data, args.root, args.split, dict(args.data_args), args.limit)
    val = None
    if args.eval_steps:
        kind = args.val_data or args.data
        val = build_reader(kind, args.root, args.val_split, dict(args.val_data_args), args.val_limit)
    settings = TrainableSettings(args.train_vision_tower, args.train_projector, args.train_sam_encoder)
    lora = LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout, tuple(args.lora_targets.split(","))) if args.lora_r else None

    model, processor = build_model(args.model, seed=args.seed, sam_checkpoint=args.sam_checkpoint)
    set_arm(model, sasp, args.sam_prompt)
    configure_trainable(model, settings)
    if lora is not None:
        model = apply_lora(model, lora, settings)
    run_config = {
        "arm": arm_name(sasp),
        "sasp": sasp,
        "sam_prompt": args.sam_prompt,
        "model_source": args.model,
        "sam_checkpoint": args.sam_checkpoint,
        "data": _fingerprint(train),
        "val_data": _fingerprint(val) if val is not None else None,
        "seed": args.seed,
        "lora": lora,
        "trainable": settings,
        "command": sys.argv,
        "args": {k: v for k, v in vars(args).items() if not callable(v)},
    }
    resume = _resume_point(args, run_config)
    from transformers import TrainingArguments

    targs = TrainingArguments(
        output_dir=args.out, max_steps=args.max_steps, learning_rate=args.lr, weight_decay=args.weight_decay,
        adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, lr_scheduler_type="linear", warmup_steps=args.warmup_steps,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        save_strategy="steps", save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps, seed=args.seed, dataloader_num_workers=args.workers,
        bf16=args.bf16, fp16=args.fp16, deepspeed=args.deepspeed, use_cpu=args.cpu,
        remove_unused_columns=False, report_to=[], disable_tqdm=not sys.stderr.isatty(),
    )
    callbacks = []
    if val is not None:
        callbacks.append(GIoUCallback(processor, [val[i] for i in range(len(val))], args.eval_steps,
                                      os.path.join(args.out, "val_curve.json"), batch_size=args.batch_size))
    trainer = SegTrainer(model=model, args=targs, train_dataset=train, data_collator=SegCollator(processor),
                         processing_class=processor, callbacks=callbacks, run_config=run_config)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.out)
    if lora is not None and trainer.args.should_save:
        merged = trainer.model.merge_and_unload()
        folder = os.path.join(args.out, "merged")
        merged.save_pretrained(folder)
        processor.save_pretrained(folder)
        with open(os.path.join(folder, RUN_CONFIG_NAME), "w") as f:
            json.dump(trainer.run_record(), f, indent=2, sort_keys=True, default=jsonable)
    return 0
