"""The paper's central picture without a model: a similarity map, SasP's points, one PNG.

    python examples/visualize.py                          # built-in picture -> visualize.png
    python examples/visualize.py --image photo.jpg --out photo_sasp.png --color 40,160,60

A <SEG> model's similarity map scores each CLIP patch token of the image against the [SEG]
token. Here a stand-in plays the model: each patch of CLIP's view (shortest side resized to
336, centre crop, 24 x 24 patches of 14 px) scores how close its mean colour is to
``--color`` (red by default). SasP turns that map into positive, negative and neutral point
prompts in image pixels, exactly as it does inside a wrapped model; ``sasp.viz.render``
draws the heat-map where the token grid really lies (the centre crop) and the points.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from sasp import READ_7B, similarity_as_points
from sasp.viz import load_image, render

CLIP_SIZE, PATCH = 336, 14


def clip_patches(image: np.ndarray) -> np.ndarray:
    """CLIP's view of the image: resize the shortest side to 336, centre crop 336 x 336, and
    return the mean colour of each 14 px patch, [24, 24, 3]."""
    h, w = image.shape[:2]
    scale = CLIP_SIZE / min(h, w)
    nh, nw = max(CLIP_SIZE, round(h * scale)), max(CLIP_SIZE, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BICUBIC), dtype=np.float32)
    top, left = (nh - CLIP_SIZE) // 2, (nw - CLIP_SIZE) // 2
    crop = resized[top : top + CLIP_SIZE, left : left + CLIP_SIZE]
    side = CLIP_SIZE // PATCH
    return crop.reshape(side, PATCH, side, PATCH, 3).mean((1, 3))


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", help="image file (default: the built-in test picture)")
    ap.add_argument("--color", default="220,40,40", help="R,G,B the stand-in model looks for (default red)")
    ap.add_argument("--out", default="visualize.png", help="picture to write (default visualize.png)")
    args = ap.parse_args(argv)
    if args.image:
        image = load_image(args.image)
    else:
        from sasp.demo import synthetic_image

        image = synthetic_image()
    target = np.array([float(v) for v in args.color.split(",")], dtype=np.float32)

    patches = clip_patches(image)
    sim = -torch.from_numpy(np.linalg.norm(patches - target, axis=-1)).reshape(1, -1)  # [1, N_p]
    hw = [list(image.shape[:2])]
    points, labels, _ = similarity_as_points(sim, hw, READ_7B)
    render(image, sim=sim, points=points, labels=labels, out=args.out, cfg=READ_7B,
           titles=[f"similarity to colour {args.color}"])
    print(f"points: {int((labels == 1).sum())} positive, {int((labels == 0).sum())} negative")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
