"""Quick start: a <SEG> segmentation model with SasP on one image, offline, in seconds.

    python examples/quickstart.py                     # writes quickstart.png
    python examples/quickstart.py --out /tmp/q.png

It builds a tiny LISA-architecture model (transformers' LLaVA + segment_anything's SAM) with
SasP switched on in its config, segments a built-in picture and draws what SAM used: the
[SEG] similarity heat-map, the point prompts and the mask. For your own checkpoint replace
``build_tiny`` with ``sasp.models.seg_llava.load_model("path/to/checkpoint")``.
"""
from __future__ import annotations

import argparse
import time

from sasp import READ_7B
from sasp.demo import synthetic_image
from sasp.models.seg_llava import build_tiny
from sasp.viz import render


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="quickstart.png", help="picture to write (default quickstart.png)")
    args = ap.parse_args(argv)
    start = time.perf_counter()

    # 1. A model with SasP on (READ-7B's settings) and its processor.
    model, processor = build_tiny(seed=0, sasp=READ_7B)

    # 2. One image, one prompt. A trained model generates its answer ("Sure, [SEG]."); here the
    #    answer is given (teacher forcing: max_new_tokens=0).
    image = synthetic_image()
    prompt = "Please segment the red circle."
    batch = processor(images=[image], prompts=[prompt], answers=["Sure, [SEG]."])
    out = model.segment(**batch, max_new_tokens=0)
    print(f"[SEG] tokens per row: {out.seg_counts.tolist()}, object found: {out.has_object.tolist()}")

    # 3. The picture: the similarity SasP used, the points SAM got, and SAM's mask.
    render(image, sim=out.similarity, points=out.points, labels=out.labels, mask=out.masks[0], out=args.out,
           cfg=model.config.sasp_config(), grid_hw=model.grid_hw, titles=[prompt])
    labels = out.labels
    print(f"points: {int((labels == 1).sum())} positive, {int((labels == 0).sum())} negative, "
          f"{int((labels == -1).sum())} neutral")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return args.out


if __name__ == "__main__":
    main()
