"""Quick start: a <SEG> segmentation model with SasP on one image, offline, in seconds.

    python examples/quickstart.py                     # writes quickstart.png
    python examples/quickstart.py --out /tmp/q.png

It builds a tiny random LISA-architecture model (transformers' LLaVA + segment_anything's
SAM), attaches SasP with one call, segments a built-in test picture and draws the [SEG]
similarity heat-map, SasP's point prompts and the mask. The weights are random, so the
picture shows the pipeline, not a trained result; for a trained model replace the first
line of ``main`` with ``model, processor = load_model("path/to/checkpoint")``.
"""
from __future__ import annotations

import argparse
import time

import torch

from sasp import READ_7B, similarity_as_points
from sasp.adapters import config_of
from sasp.adapters.hf import build_tiny, seg_similarity, wrap_hf
from sasp.cli import synthetic_image
from sasp.viz import render


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="quickstart.png", help="picture to write (default quickstart.png)")
    args = ap.parse_args(argv)
    start = time.perf_counter()

    # 1. A model and its processor (tokenizer with [SEG], CLIP and SAM preprocessing).
    model, processor = build_tiny(seed=0)
    # 2. SasP: SAM is now prompted with similarity points as well as the [SEG] embedding.
    wrap_hf(model, READ_7B)

    # 3. One image, one prompt. A trained model generates its answer ("Sure, [SEG]."); the
    #    random tiny model cannot, so the answer is given (teacher forcing: max_new_tokens=0).
    image = synthetic_image()
    prompt = "Please segment the red circle."
    batch = processor(images=[image], prompts=[prompt], answers=["Sure, [SEG]."])
    with torch.no_grad():
        out = model.segment(**batch, max_new_tokens=0, output_hidden_states=True)
    print(f"[SEG] tokens per row: {out.seg_counts.tolist()}, object found: {out.has_object.tolist()}")

    # 4. The picture: the similarity SasP used, its points, and SAM's mask.
    sim, rows = seg_similarity(model, out.sequences, out.hidden_states)
    points, labels, _ = similarity_as_points(sim, batch["image_hw"][rows], config_of(model))
    render(image, sim=sim, points=points, labels=labels, mask=out.masks[0], out=args.out, cfg=config_of(model),
           titles=[prompt])
    print(f"points: {int((labels == 1).sum())} positive, {int((labels == 0).sum())} negative, "
          f"{int((labels == -1).sum())} neutral")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return args.out


if __name__ == "__main__":
    main()
