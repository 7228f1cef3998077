"""``sasp compare``: the command line of the evaluation harness.

    sasp compare --data reasonseg --root ./dataset --split val --out runs/rs_val \\
        --model mypkg.lisa_entry:make --model-arg checkpoint=./LISA-7B
    torchrun --nproc-per-node 8 -m sasp compare ...        # one process per GPU
    sasp compare --data toy --arms toy --out /tmp/toy      # offline smoke test, no model

Data kinds (``sasp.data.readers.DATA_KINDS``, shared with ``sasp train``) and arm builders
are registries: ``register_data_kind`` and ``register_arm_builder`` add entries (a callable or a lazy "module:attribute" string) without
touching the parser. A builder takes the parsed arguments and returns (baseline, candidate);
the options every builder may read are --model/--model-arg, --baseline/--candidate,
--preset-baseline/--preset-candidate, --arm-arg and --device.

Exit codes: 0 done, 1 no sample could be evaluated, 2 bad input (one line on stderr),
130 interrupted (run the same command again to resume).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ..data import readers
from ..data.base import DatasetError, Reader
from ..data.readers import ReaderFactory, parse_option
from .arms import Arm, ArmError, arms_from_factory, load_entry_point
from .rows import RunError

ArmBuilder = Callable[[argparse.Namespace], Tuple[Arm, Arm]]

DATA_PROTOCOLS: Dict[str, str] = {"grefcoco": "gsva"}
"""Metric protocol per data kind when --protocol is not given (default "lisa")."""

ARM_BUILDERS: Dict[str, Union[str, ArmBuilder]] = {
    "seg_llava": "sasp.models.seg_llava:seg_llava_arms",
}
"""name -> ``builder(args) -> (baseline Arm, candidate Arm)`` or its "module:attribute"."""


class CommandError(ValueError):
    """Bad input to ``sasp compare``: printed as one line, exit code 2."""


def register_data_kind(name: str, factory: Union[str, ReaderFactory], protocol: Optional[str] = None) -> None:
    """Make ``--data name`` build readers with ``factory(root, split=..., **data_args)`` (in
    ``sasp train`` too), scored with the metric ``protocol`` ("lisa" when None)."""
    readers.register_data_kind(name, factory)
    if protocol is not None:
        DATA_PROTOCOLS[name] = protocol


def register_arm_builder(name: str, builder: Union[str, ArmBuilder]) -> None:
    """Make ``--arms name`` build the two arms with ``builder(args)``."""
    ARM_BUILDERS[name] = builder


def _resolve(table: Dict[str, Any], name: str, what: str) -> Callable:
    if name not in table:
        raise CommandError(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}")
    entry = table[name]
    if isinstance(entry, str):
        try:
            entry = load_entry_point(entry)
        except ArmError as err:
            raise CommandError(f"{what} {name!r} is not available here: {err}") from None
    return entry


# --------------------------------------------------------------------------- built-in entries


def _toy_reader(root: Optional[str], split: Optional[str] = None, n: int = 20, **kw: Any) -> Reader:
    from .testing import ToyReader

    return ToyReader(int(n), **kw)


def _toy_arms(args: argparse.Namespace) -> Tuple[Arm, Arm]:
    from .testing import ThresholdPredictor

    opts = args.arm_args
    lo, hi = int(opts.get("candidate_threshold", 120)), int(opts.get("baseline_threshold", 150))
    sleep = float(opts.get("sleep", 0.0))  # seconds per sample, to make a run slow enough to interrupt
    fail = [f"toy/{i}" for i in opts.get("fail", [])]  # candidate fails on these sample indices
    return (Arm(f"threshold-{hi}", ThresholdPredictor(threshold=hi, sleep=sleep), {"toy_threshold": hi}),
            Arm(f"threshold-{lo}", ThresholdPredictor(threshold=lo, sleep=sleep, fail_ids=fail),
                {"toy_threshold": lo, "fail": fail}))


def _factory_arms(args: argparse.Namespace) -> Tuple[Arm, Arm]:
    if not args.model:
        raise CommandError("--arms factory needs --model module:factory")
    kwargs = dict(args.model_args)
    device = None if "device" in kwargs else (args.device or "cpu")
    label = args.model.rpartition(":")[2]
    return arms_from_factory(args.model, kwargs, names=(label, f"{label}+sasp"), device=device)


readers.register_data_kind("toy", _toy_reader)
ARM_BUILDERS["factory"] = _factory_arms
ARM_BUILDERS["toy"] = _toy_arms


# --------------------------------------------------------------------------- argparse


HELP = """\
Evaluate a baseline and a SasP arm on the same samples and write per-sample rows, a summary
with paired bootstrap intervals (summary.json, summary.md) and a plot (compare.png).

A run writes rows as it goes: run the same command again after an interruption and it
resumes; an --out folder written by another run (other data, models or metric settings) is
refused. Under torchrun each process takes every N-th sample and rank 0 merges.

examples:
  sasp compare --data toy --arms toy --out /tmp/toy
  sasp compare --data reasonseg --root ./dataset --split val --out runs/rs \\
      --model mypkg.entry:make --model-arg checkpoint=./LISA-7B
  torchrun --nproc-per-node 8 -m sasp compare --data refcoco --root ./refer_seg \\
      --data-arg dataset=refcoco+ --split testA --out runs/rc+ --baseline ./lisa --candidate ./read
"""


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``sasp compare`` to ``p``."""
    data = p.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="KIND",
                      help=f"dataset kind: {', '.join(sorted(readers.DATA_KINDS))} or module:factory")
    data.add_argument("--root", metavar="PATH", help="dataset root folder")
    data.add_argument("--split", help="split (val, test, testA ...; the reader's default when omitted)")
    data.add_argument("--limit", type=int, metavar="N", help="only the first N samples")
    data.add_argument("--data-arg", dest="data_args", action="append", type=parse_option, default=[],
                      metavar="KEY=VALUE", help="extra reader argument (repeatable; VALUE parsed as JSON when it can be)")
    arms = p.add_argument_group("arms")
    arms.add_argument("--arms", metavar="NAME", help=f"arm builder: {', '.join(sorted(ARM_BUILDERS))} "
                      "(default: factory with --model, seg_llava with --baseline/--candidate)")
    arms.add_argument("--model", metavar="MODULE:FACTORY", help="factory(device=..., **model_args) -> "
                      "(model, predict); the baseline runs predict inside sasp.disabled(model)")
    arms.add_argument("--model-arg", dest="model_args", action="append", type=parse_option, default=[],
                      metavar="KEY=VALUE", help="keyword argument of the factory (repeatable)")
    arms.add_argument("--baseline", metavar="PATH", help="baseline checkpoint (builders that load two models)")
    arms.add_argument("--candidate", metavar="PATH", help="candidate checkpoint")
    arms.add_argument("--preset-baseline", metavar="NAME", help="SasP preset of the baseline (off, read-7b, read-13b)")
    arms.add_argument("--preset-candidate", metavar="NAME", help="SasP preset of the candidate")
    arms.add_argument("--arm-arg", dest="arm_args", action="append", type=parse_option, default=[],
                      metavar="KEY=VALUE", help="extra argument for the arm builder (repeatable)")
    arms.add_argument("--device", help="device for the models (default: cuda:LOCAL_RANK when available, else cpu)")
    run_ = p.add_argument_group("run")
    run_.add_argument("--out", required=True, metavar="DIR", help="output folder (resumed when it holds this run)")
    run_.add_argument("--batch-size", type=int, default=1, metavar="N", help="samples per model call (default 1)")
    run_.add_argument("--workers", type=int, default=0, metavar="N", help="image-loading worker processes (default 0)")
    run_.add_argument("--seed", type=int, default=0, help="random seed, also of the bootstrap (default 0)")
    run_.add_argument("--protocol", choices=["lisa", "gsva"],
                      help="gIoU/cIoU rules: lisa, or gsva (gRefCOCO's no-target rule; default for grefcoco)")
    run_.add_argument("--resamples", type=int, default=2000, metavar="B", help="bootstrap resamples (default 2000)")
    run_.add_argument("--fail-fast", action="store_true", help="stop at the first model error instead of recording it")
    run_.add_argument("--no-plot", action="store_true", help="do not write compare.png")
    run_.add_argument("--no-fsync", action="store_true",
                      help="no fsync per sample (a killed process loses no rows either way; a machine crash may)")
    run_.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` sub-command to an ``ArgumentParser.add_subparsers()`` object."""
    p = subparsers.add_parser("compare", help="evaluate a baseline and a SasP arm on a dataset",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    return configure_parser(p)


# --------------------------------------------------------------------------- run


def _init_distributed() -> Tuple[bool, int]:
    """Join torchrun's process group when launched by it; (we created it, local rank)."""
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return False, local_rank
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise CommandError(f"process {local_rank} of this node has no GPU ({torch.cuda.device_count()} visible); "
                               "start at most one process per GPU (torchrun --nproc-per-node)")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True, local_rank


def build_reader(args: argparse.Namespace) -> Reader:
    factory = readers.reader_factory(args.data)
    if args.root is None and args.data not in ("toy", "synthetic"):
        raise CommandError(f"--data {args.data} needs --root (the dataset folder)")
    try:
        reader = readers.open_reader(factory, args.root, args.split, args.data_args)
    except TypeError as err:
        raise CommandError(f"--data {args.data}: {err} (check --split / --data-arg)") from None
    if args.limit is not None:
        from .harness import LimitedReader

        if args.limit < 1:
            raise CommandError(f"--limit must be >= 1, got {args.limit}")
        reader = LimitedReader(reader, args.limit)
    return reader


def build_arms(args: argparse.Namespace) -> Tuple[Arm, Arm]:
    name = args.arms or ("factory" if args.model else "seg_llava" if (args.baseline or args.candidate) else None)
    if name is None:
        raise CommandError("say which models to compare: --model module:factory, "
                           "--baseline/--candidate checkpoints, or --arms NAME")
    if args.model and name != "factory":
        raise CommandError(f"--model goes with --arms factory, not --arms {name}")
    return _resolve(ARM_BUILDERS, name, "arm builder")(args)


def run(args: argparse.Namespace) -> int:
    """Run ``sasp compare`` with parsed arguments; returns the exit code."""
    from .harness import compare

    for opt in ("model_args", "data_args", "arm_args"):
        setattr(args, opt, dict(getattr(args, opt) or []))
    created, rank = False, 0
    try:
        if args.batch_size < 1 or args.workers < 0 or args.resamples < 1:
            raise CommandError("--batch-size and --resamples must be >= 1, --workers >= 0")
        created, local_rank = _init_distributed()
        import torch

        if args.device is None and torch.cuda.is_available():
            args.device = f"cuda:{local_rank}"
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        reader = build_reader(args)
        arms = build_arms(args)
        protocol = args.protocol or DATA_PROTOCOLS.get(args.data, "lisa")
        summary = compare(
            reader, arms, args.out, batch_size=args.batch_size, num_workers=args.workers, seed=args.seed,
            protocol=protocol, resamples=args.resamples, progress=not args.quiet, plot=not args.no_plot,
            fail_fast=args.fail_fast, fsync=not args.no_fsync,
        )
    except (CommandError, ArmError, DatasetError, RunError) as err:
        if rank == 0:  # every rank meets the same error; one line is enough
            print(f"sasp compare: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sasp compare: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        with open(os.path.join(args.out, "summary.md")) as f:
            print(f.read(), end="")
        print(f"wrote {os.path.abspath(args.out)}")
    if summary.evaluated == 0 and summary.samples > 0:
        if rank == 0:
            print("sasp compare: no sample could be evaluated; see the errors in samples.jsonl", file=sys.stderr)
        return 1
    return 0
