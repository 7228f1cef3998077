"""The ``sasp`` command: ``sasp demo`` (one image + prompt -> a picture) and ``sasp bench``.

    sasp demo                                  # tiny offline model, built-in image -> sasp_demo.png
    sasp demo --image cat.jpg --prompt "Segment the cat." --model ./my-seg-llava --out cat.png
    sasp bench --quick                         # benchmarks/bench_sasp.py, short run

Exit codes: 0 success, 2 bad input (missing or unreadable image, empty or too long prompt,
wrong checkpoint, unknown option), 1 a benchmark failed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

DEFAULT_PROMPT = "Please segment the red circle."
TINY_ANSWER = "Sure, [SEG]."
DEFAULT_OUT = "sasp_demo.png"

DEMO_HELP = """\
Run a <SEG> segmentation model with SasP on one image and one prompt, and write a PNG with
the image, the similarity heat-map of the [SEG] token over the image tokens, SasP's point
prompts (green dots: positive, red crosses: negative, hollow yellow: neutral) and the mask.

Without options it builds a tiny random model offline and uses a built-in test image, so
it runs anywhere in a few seconds; its heat-map and mask are not meaningful (random
weights). Point --model at a trained checkpoint for real results:
  - a folder written by SegLlavaForCausalLM.save_pretrained (+ processor.save_pretrained), or
  - a LLaVA-1.5 folder in transformers' format (SAM from --sam-checkpoint; the projection
    and mask decoder then start untrained).

examples:
  sasp demo
  sasp demo --image photo.jpg --prompt "Segment the dog on the left." --out dog.png
  sasp demo --model ./seg-llava-7b --sam-checkpoint sam_vit_h_4b8939.pth --image photo.jpg
"""

BENCH_HELP = """\
Run the benchmarks in the source checkout's benchmarks/ folder (bench_<name>.py) and print
their tables; every option sasp does not know is passed on to each benchmark.

examples:
  sasp bench                         # benchmarks/bench_sasp.py, full table
  sasp bench --quick                 # a short run
  sasp bench --quick --csv out.csv   # any option of the benchmark passes through
  sasp bench --list                  # what is there
  sasp bench --only adapters         # benchmarks/bench_adapters.py
  sasp bench --all --quick           # every bench_*.py
"""


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""


# --------------------------------------------------------------------------- helpers


def synthetic_image(height: int = 240, width: int = 320) -> np.ndarray:
    """The built-in test picture: a red circle and a green square on a dark blue gradient."""
    yy, xx = np.mgrid[:height, :width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 2] = (40 + 80 * yy / max(height - 1, 1)).astype(np.uint8)
    img[..., 1] = 20
    circle = (xx - 0.62 * width) ** 2 + (yy - 0.5 * height) ** 2 < (0.18 * min(height, width) * 1.3) ** 2
    img[circle] = (220, 40, 40)
    square = (abs(xx - 0.2 * width) < 0.09 * width) & (abs(yy - 0.3 * height) < 0.09 * width)
    img[square] = (40, 200, 60)
    return img


def _check_image(path: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"image not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"--image must be a file, {path} is a folder")
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a bad file
        raise UserError(f"cannot read {path} as an image ({type(err).__name__}: {err})") from None


def _check_out(path: str) -> None:
    if not path.lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {path}")
    folder = os.path.dirname(os.path.abspath(path))
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK):
        raise UserError(f"cannot write {path}: {probe} is not writable")


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", bar_format="{desc:<28}{bar:20} {n_fmt}/{total_fmt} [{elapsed}]")


@dataclass
class DemoResult:
    """What ``run_demo`` did: the picture, the answer, and the SasP points per [SEG]."""

    out: str
    answer: str
    has_object: bool
    rendering: Any = None
    points: Any = None
    labels: Any = None
    masks: Any = None
    notes: List[str] = field(default_factory=list)


def run_demo(
    model: str = "tiny",
    image: Optional[str] = None,
    prompt: str = DEFAULT_PROMPT,
    answer: Optional[str] = None,
    out: str = DEFAULT_OUT,
    sam_checkpoint: Optional[str] = None,
    preset: str = "read-7b",
    sam_prompt: str = "both",
    max_new_tokens: int = 32,
    device: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    """The body of ``sasp demo``; raises ``UserError`` for bad input."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("the prompt is empty; say what to segment, e.g. --prompt 'Segment the red circle.'")
    if image is not None:
        _check_image(image)
    _check_out(out)
    if model != "tiny" and not os.path.exists(model):
        raise UserError(f"model folder not found: {model}")
    if sam_checkpoint is not None and not os.path.isfile(sam_checkpoint):
        raise UserError(f"SAM checkpoint not found: {sam_checkpoint}")

    bar = _progress(4, progress)
    try:
        bar.set_description("loading libraries")
        import torch

        from sasp.config import PRESETS
        from sasp.ops import similarity_as_points
        from sasp.viz import render

        from .adapters import base as adapter_base
        from .adapters import hf

        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        torch.manual_seed(seed)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):
            raise UserError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1 ...)") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        bar.set_description("building tiny model" if model == "tiny" else "loading model")
        notes: List[str] = []
        try:
            if model == "tiny":
                net, processor = hf.build_tiny(seed=seed)
                if sam_checkpoint is not None:
                    raise UserError("--sam-checkpoint needs --model: the tiny model's SAM is not a released SAM")
                if answer is None:
                    answer = TINY_ANSWER
                    notes.append(
                        f"tiny random model: the answer is fixed to {TINY_ANSWER!r} (it cannot generate one); "
                        "heat-map and mask show the pipeline, not a trained result"
                    )
            else:
                net, processor = hf.load_model(model, sam_checkpoint=sam_checkpoint)
        except (hf.InputError, hf.CheckpointError) as err:
            raise UserError(str(err)) from None
        net = net.to(device).eval()
        hf.wrap_hf(net, PRESETS[preset], prompt=sam_prompt)
        cfg = adapter_base.config_of(net)
        bar.update()

        bar.set_description("preparing inputs")
        picture = image if image is not None else synthetic_image()
        try:
            batch = processor(images=[picture], prompts=[prompt], answers=[answer] if answer else None)
        except hf.InputError as err:
            raise UserError(str(err)) from None
        prompt_len = batch["input_ids"].shape[1]
        batch = {k: v.to(device) for k, v in batch.items()}
        bar.update()

        bar.set_description("generating + segmenting")
        try:
            result = net.segment(
                **batch, max_new_tokens=0 if answer else max_new_tokens, output_hidden_states=True
            )
        except hf.InputError as err:
            raise UserError(str(err)) from None
        text = answer if answer else processor.decode(result.sequences, prompt_len)[0]
        bar.update()

        bar.set_description("rendering")
        hw = batch["image_hw"].cpu()
        points = labels = sim = None
        if bool(result.has_object[0]):
            sim, rows = hf.seg_similarity(net, result.sequences, result.hidden_states)
            points, labels, _ = similarity_as_points(sim, hw[rows], cfg, None)
            sim, points, labels = sim.cpu(), points.detach().cpu(), labels.cpu()
        mask = result.masks[0].cpu()
        titles = [f"[SEG] {i}: {prompt.strip()[:40]}" for i in range(max(1, mask.shape[0]))]
        if not bool(result.has_object[0]):
            titles = [f"no object ({prompt.strip()[:40]})"]
            mask = None
        rendering = render(
            picture, sim=sim, points=points, labels=labels, mask=mask, out=out, cfg=cfg, titles=titles
        )
        bar.update()
    finally:
        bar.close()
    return DemoResult(
        out=os.path.abspath(out), answer=text, has_object=bool(result.has_object[0]), rendering=rendering,
        points=points, labels=labels, masks=result.masks[0].cpu(), notes=notes,
    )


# --------------------------------------------------------------------------- bench


def benchmarks_dir(explicit: Optional[str] = None) -> Path:
    """The source checkout's benchmarks/ folder (next to the sasp package)."""
    if explicit:
        folder = Path(explicit)
    else:
        folder = Path(__file__).resolve().parent.parent / "benchmarks"
    if not folder.is_dir():
        raise UserError(
            f"no benchmarks folder at {folder}: the benchmarks ship with the source checkout, not the wheel; "
            "clone the repository and run `pip install -e .`, or pass --dir"
        )
    return folder


def available_benchmarks(folder: Path) -> List[str]:
    return sorted(p.stem[len("bench_"):] for p in folder.glob("bench_*.py"))


def run_bench(names: Sequence[str], extra: Sequence[str], run_all: bool = False, folder: Optional[str] = None) -> int:
    where = benchmarks_dir(folder)
    have = available_benchmarks(where)
    if run_all:
        names = have
    names = list(names) or ["sasp"]
    unknown = [n for n in names if n not in have]
    if unknown:
        raise UserError(f"no benchmark named {', '.join(unknown)} in {where}; available: {', '.join(have) or 'none'}")
    from tqdm.auto import tqdm

    failed = []
    for name in tqdm(names, desc="benchmarks", unit="bench", disable=len(names) < 2):
        script = where / f"bench_{name}.py"
        print(f"== {script} {' '.join(extra)}".rstrip(), flush=True)
        rc = subprocess.call([sys.executable, str(script), *extra])
        if rc != 0:
            failed.append(f"{name} (exit code {rc})")
    if failed:
        print(f"sasp bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- argparse


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sasp",
        description=textwrap.dedent(
            """\
            Similarity as Points (READ, CVPR 2025) for <SEG>-token segmentation models.

            SasP turns the similarity between a model's [SEG] token and its image tokens into
            point prompts for SAM. Start with `sasp demo` (offline, a few seconds)."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sasp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,bench}")

    demo = sub.add_parser(
        "demo", help="segment one image with one prompt and write a picture", description=DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--model", default="tiny", metavar="PATH",
                      help="'tiny' (default: random tiny model built offline) or a checkpoint folder")
    demo.add_argument("--image", metavar="FILE", help="image file (default: a built-in test picture)")
    demo.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"what to segment (default: {DEFAULT_PROMPT!r})")
    demo.add_argument("--answer", metavar="TEXT",
                      help="use this answer instead of generating one, e.g. 'Sure, [SEG].' "
                           f"(default: generate; the tiny model uses {TINY_ANSWER!r})")
    demo.add_argument("--out", default=DEFAULT_OUT, metavar="FILE.png", help=f"picture to write (default: {DEFAULT_OUT})")
    demo.add_argument("--sam-checkpoint", metavar="FILE", help="segment_anything checkpoint (.pth) for SAM")
    demo.add_argument("--preset", default="read-7b", choices=["read-7b", "read-13b"],
                      help="SasP settings: read-7b (30 points, t_pos 0.8) or read-13b (60 points, t_pos 0.6)")
    demo.add_argument("--sam-prompt", default="both", choices=["both", "points", "text"],
                      help="what SAM is prompted with: SasP points and the [SEG] embedding (both), "
                           "points only, or the [SEG] embedding only (text: SasP off)")
    demo.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="answer length limit (default 32)")
    demo.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    bench = sub.add_parser(
        "bench", help="run the benchmarks (options it does not know go to the benchmark)", description=BENCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
    )
    bench.add_argument("--only", action="append", default=[], metavar="NAME",
                       help="run bench_NAME.py (repeat or comma-separate; default: sasp)")
    bench.add_argument("--all", action="store_true", help="run every bench_*.py")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.add_argument("--dir", metavar="FOLDER", help="benchmarks folder (default: the checkout's benchmarks/)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "bench":
            if args.list:
                where = benchmarks_dir(args.dir)
                print("\n".join(available_benchmarks(where)))
                return 0
            names = [n for item in args.only for n in item.split(",") if n]
            return run_bench(names, extra, args.all, args.dir)
        if args.max_new_tokens < 0:
            raise UserError("--max-new-tokens must be >= 0")
        res = run_demo(
            model=args.model, image=args.image, prompt=args.prompt, answer=args.answer, out=args.out,
            sam_checkpoint=args.sam_checkpoint, preset=args.preset, sam_prompt=args.sam_prompt,
            max_new_tokens=args.max_new_tokens, device=args.device, seed=args.seed, progress=not args.quiet,
        )
    except UserError as err:
        print(f"sasp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    for note in res.notes:
        print(f"note: {note}")
    print(f"answer: {res.answer}")
    if res.has_object:
        n = res.masks.shape[0]
        pos = int((res.labels == 1).sum()) if res.labels is not None else 0
        neg = int((res.labels == 0).sum()) if res.labels is not None else 0
        print(f"masks: {n}  points: {pos} positive, {neg} negative")
    else:
        print("no object: the answer has no [SEG] token")
    print(f"wrote {res.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
