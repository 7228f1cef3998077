"""``sasp convert SRC DST``: the command-line face of ``sasp.convert.convert_checkpoint``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sasp.config import PRESETS

from .keys import FAMILIES

HELP = """\
Convert a released LISA, SESAME, READ or GSVA checkpoint (the merged folder their
merge_lora_weights_and_save_hf_model.py writes: config.json, weights, tokenizer) into a SegLlava
folder (transformers' LLaVA + segment_anything's SAM + LISA's projection, SasP built in) that
`sasp demo --model DST` and sasp.models.seg_llava.load_model read.

The conversion streams one weight file at a time (peak memory about one shard) and checks every
key and shape before writing; any unknown, missing or mis-shaped weight stops it with one line
naming the key. Their merge scripts leave the CLIP vision tower out: pass the CLIP folder the
checkpoint's config names (mm_vision_tower, e.g. a local copy of openai/clip-vit-large-patch14)
with --vision-tower unless that path exists locally.

needs: pip install "sasp[hf]"

examples:
  sasp convert LISA-7B-v1 seg-llava-lisa-7b --vision-tower clip-vit-large-patch14
  sasp convert READ-LLaVA-v1.5-7B seg-llava-read-7b --family read --vision-tower clip-vit-large-patch14-336
"""


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("convert", help="convert a LISA/SESAME/READ/GSVA checkpoint into a SegLlava folder",
                         description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("src", metavar="SRC", help="the merged checkpoint folder")
    cmd.add_argument("dst", metavar="DST", help="the SegLlava folder to write (must not exist unless --overwrite)")
    cmd.add_argument("--family", choices=sorted(FAMILIES), help="checkpoint family (default: from config.json)")
    cmd.add_argument("--vision-tower", metavar="DIR", help="CLIP folder when SRC has no vision-tower weights")
    cmd.add_argument("--sam-config", metavar="JSON", help="build_sam config as JSON (default: vit_h/l/b from the weights)")
    cmd.add_argument("--sasp", default="auto", choices=["auto", "none", *sorted(PRESETS)],
                     help="SasP in the converted config: auto (READ: its released setting by model size; others: "
                          "off), none, read-7b (K 30, t_pos 0.8, down_sample 2) or read-13b (K 60, t_pos 0.6, down_sample 1)")
    cmd.add_argument("--overwrite", action="store_true", help="replace DST if it exists")


def run(args: argparse.Namespace) -> int:
    """Exit code: 0 written, 2 a checkpoint or argument that cannot be converted (one line)."""
    from .keys import ConversionError

    try:
        sam = json.loads(args.sam_config) if args.sam_config else None
    except ValueError as err:
        print(f"sasp convert: error: --sam-config is not JSON ({err})", file=sys.stderr)
        return 2
    try:
        from .convert import convert_checkpoint

        result = convert_checkpoint(
            args.src, args.dst, family=args.family, vision_tower=args.vision_tower, sam_config=sam,
            sasp=args.sasp, overwrite=args.overwrite,
        )
    except ConversionError as err:
        print(f"sasp convert: error: {err}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(note)
    print(f"wrote {result.tensors} tensors to {result.path}")
    return 0
