"""Quick start: a <SEG> segmentation model with SasP on one image, offline, in seconds.

    python examples/quickstart.py                     # writes quickstart.png
    python examples/quickstart.py --out /tmp/q.png

It loads the tiny LISA-architecture model that ships with sasp (transformers' LLaVA +
segment_anything's SAM, trained on sasp's synthetic shapes task with SasP on), asks it about a
held-out synthetic scene, lets it generate its answer ("Sure, [SEG].") and draws what SAM used:
the [SEG] similarity heat-map, the point prompts and the mask. For your own checkpoint replace
``load_pretrained_tiny()`` with ``sasp.models.seg_llava.load_model("path/to/checkpoint")``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from sasp.demo import demo_sample
from sasp.metrics import intersection_union
from sasp.models.seg_llava import load_pretrained_tiny
from sasp.viz import render


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="quickstart.png", help="picture to write (default quickstart.png)")
    args = ap.parse_args(argv)
    start = time.perf_counter()

    # 1. The trained model and its processor; SasP is on in its saved config.
    model, processor = load_pretrained_tiny()
    print(f"SasP: {model.config.sasp_config()}")

    # 2. One image, one prompt (a held-out scene of the synthetic task). The model generates
    #    its answer; a [SEG] in it asks SAM for a mask.
    sample = demo_sample()
    prompt = sample.instruction
    batch = processor(images=[sample.image], prompts=[prompt])
    out = model.segment(**batch, max_new_tokens=16)
    answer = processor.decode(out.sequences, batch["input_ids"].shape[1])[0]
    print(f"prompt: {prompt}\nanswer: {answer}")
    if not bool(out.has_object[0]):
        raise SystemExit("the model answered without [SEG]: nothing to draw")

    # 3. How good is the mask? IoU with the scene's target.
    inter, union = intersection_union(out.masks[0].any(0).numpy().astype(np.uint8), sample.target())
    print(f"IoU with the target: {float(inter[0]) / float(union[0]):.3f}")

    # 4. The picture: the similarity SasP used, the points SAM got, and SAM's mask.
    render(sample.image, sim=out.similarity, points=out.points, labels=out.labels, mask=out.masks[0], out=args.out,
           cfg=model.config.sasp_config(), grid_hw=model.grid_hw, titles=[prompt])
    labels = out.labels
    print(f"points: {int((labels == 1).sum())} positive, {int((labels == 0).sum())} negative, "
          f"{int((labels == -1).sum())} neutral")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return args.out


if __name__ == "__main__":
    main()
