"""The ``sasp`` command.

    sasp demo                                   # one image + prompt -> a picture (offline)
    sasp compare --data reasonseg --root ...    # baseline vs SasP on a benchmark
    sasp train --data synthetic ...             # fine-tune, either arm

Exit codes: 0 success, 2 bad input or a missing optional dependency (one line on stderr),
1 a failure while running, 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from typing import Optional, Sequence

from .config import PRESETS
from .demo import DEFAULT_OUT, DEFAULT_PROMPT, TINY_ANSWER, UserError, run_demo

EXTRAS = {
    "transformers": "hf", "segment_anything": "hf", "safetensors": "hf", "tokenizers": "hf", "torchvision": "hf",
    "matplotlib": "viz", "PIL": "viz", "tqdm": "viz", "pycocotools": "eval",
    "accelerate": "train", "peft": "train",
}
"""Which extra brings a missing module (for the one-line error)."""

DEMO_HELP = f"""\
Run a <SEG> segmentation model with SasP on one image and one prompt, and write a PNG with
the image, the similarity heat-map of the [SEG] token over the image tokens (with a colour
bar), the point prompts SAM received (green dots: positive, red crosses: negative, hollow
yellow: neutral) and the mask, titled with the prompt.

Without options it uses a tiny model built offline and a built-in picture; point --model at
a trained checkpoint for real results: a folder written by save_pretrained (model and
processor), or a LLaVA-1.5 folder in transformers' format (SAM from --sam-checkpoint).
Large images are drawn from a copy at most 1024 px a side, so drawing takes the same time
and memory whatever the input size.

needs: pip install "sasp[hf,viz]"

examples:
  sasp demo
  sasp demo --image photo.jpg --prompt "Segment the dog on the left." --out dog.png
  sasp demo --model ./seg-llava-7b --image photo.jpg --sam-prompt points
"""


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="segment one image with one prompt and write a picture", description=DEMO_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--model", default="tiny", metavar="PATH", help="'tiny' (default) or a checkpoint folder")
    demo.add_argument("--image", metavar="FILE", help="image file (default: a built-in picture)")
    demo.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"what to segment (default: {DEFAULT_PROMPT!r})")
    demo.add_argument("--answer", metavar="TEXT", help="use this answer instead of generating one, e.g. 'Sure, [SEG].' "
                      f"(default: generate; the tiny random model uses {TINY_ANSWER!r})")
    demo.add_argument("--out", default=DEFAULT_OUT, metavar="FILE.png", help=f"picture to write (default: {DEFAULT_OUT})")
    demo.add_argument("--sam-checkpoint", metavar="FILE", help="segment_anything checkpoint (.pth) for SAM")
    demo.add_argument("--preset", default="read-7b", choices=sorted(PRESETS),
                      help="SasP settings: read-7b (30 points, t_pos 0.8), read-13b (60 points, t_pos 0.6), "
                           "read-7b+mask (read-7b plus the similarity map as SAM's mask prompt) or mask (the map "
                           "only); default read-7b")
    demo.add_argument("--sam-prompt", default="both", choices=["both", "points", "text"],
                      help="what SAM is prompted with: the SasP points and the [SEG] embedding (both), the points "
                           "only, or the [SEG] embedding only (text: SasP off, no points drawn)")
    demo.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="answer length limit (default 32)")
    demo.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the tiny model (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")


DEMO_NEEDS = ("transformers", "segment_anything", "torchvision", "matplotlib", "PIL", "tqdm")


def require(command: str, modules: Sequence[str]) -> None:
    """Raise ``UserError`` naming every missing module of ``command`` and the extras to install."""
    import importlib.util

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # a module blocked or broken in sys.modules
            return True

    missing = [m for m in modules if absent(m)]
    if missing:
        extras = ",".join(sorted({EXTRAS.get(m, "all") for m in missing}))
        raise UserError(f"{command} needs {', '.join(missing)}: pip install \"sasp[{extras}]\"")


def _run_demo(args: argparse.Namespace) -> int:
    require("sasp demo", DEMO_NEEDS)
    if args.max_new_tokens < 0:
        raise UserError("--max-new-tokens must be >= 0")
    res = run_demo(
        model=args.model, image=args.image, prompt=args.prompt, answer=args.answer, out=args.out,
        sam_checkpoint=args.sam_checkpoint, preset=args.preset, sam_prompt=args.sam_prompt,
        max_new_tokens=args.max_new_tokens, device=args.device, seed=args.seed, progress=not args.quiet,
    )
    for note in res.notes:
        print(f"note: {note}")
    print(f"answer: {res.answer}")
    if res.has_object:
        pos = int((res.labels == 1).sum()) if res.labels is not None else 0
        neg = int((res.labels == 0).sum()) if res.labels is not None else 0
        print(f"masks: {res.masks.shape[0]}  points: {pos} positive, {neg} negative")
    else:
        print("no object: the answer has no [SEG] token")
    print(f"wrote {res.out}")
    return 0


COMMANDS = {"compare": "sasp.evaluate.command", "train": "sasp.train.command", "convert": "sasp.convert.command"}
"""Sub-commands living in their own packages: module with ``add_parser(sub)`` and ``run(args)``."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sasp",
        description=textwrap.dedent("""\
            Similarity as Points (READ, CVPR 2025) for <SEG>-token segmentation models.

            SasP turns the similarity between a model's [SEG] token and its image tokens into
            point prompts for SAM. Start with `sasp demo` (offline, a few seconds)."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sasp {__version__}")
    sub = parser.add_subparsers(dest="command")
    _add_demo(sub)
    names = ["demo"]
    for name, module in COMMANDS.items():
        try:
            importlib.import_module(module).add_parser(sub)
        except ModuleNotFoundError as err:
            if err.name and (err.name == module or module.startswith(err.name + ".")):
                continue  # not part of this installation
            raise
        names.append(name)
    sub.metavar = "{" + ",".join(names) + "}"
    return parser


def _missing_extra(err: ImportError) -> Optional[str]:
    name = (getattr(err, "name", None) or "").split(".")[0]
    if name in EXTRAS:
        return f"this command needs {name}: pip install \"sasp[{EXTRAS[name]}]\""
    text = str(err)
    return text if "pip install" in text else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            return _run_demo(args)
        return int(importlib.import_module(COMMANDS[args.command]).run(args))
    except UserError as err:
        print(f"sasp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        message = _missing_extra(err)
        if message is None:
            raise
        print(f"sasp {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
