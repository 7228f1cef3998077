"""Tiny datasets in each benchmark's exact on-disk format, with hand-computable masks.

Geometry (pycocotools polygons cover [x0, x1) x [y0, y1) for an integer rectangle; OpenCV, and
so ReasonSeg, covers both borders):

* ann 101: rectangle x 10..30, y 5..20                      -> 20 * 15 = 300 pixels
* ann 102: rectangles [0,10)x[0,10) and [5,15)x[5,15)        -> union 100 + 100 - 25 = 175
* ann 101 | ann 102: overlap [10,15)x[5,15) = 50             -> 300 + 175 - 50 = 425
* ann 103: uncompressed RLE of RLE_MASK_103 (150 + 1 pixels)
* ann 201: compressed RLE of a disk; ann 204: a list of two compressed RLEs (LISA's form)
"""
import json
import os
import pickle

import numpy as np
from PIL import Image

IMAGES = {1: ("COCO_train2014_000000000001.jpg", 40, 60), 2: ("COCO_train2014_000000000002.jpg", 32, 48),
          3: ("COCO_train2014_000000000003.jpg", 16, 16)}


def rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rle_mask_103():
    m = np.zeros((40, 60), np.uint8)
    m[20:30, 40:55] = 1
    m[0, 59] = 1
    return m


def disk_201():
    yy, xx = np.mgrid[:32, :48]
    return ((yy - 16) ** 2 + (xx - 24) ** 2 <= 100).astype(np.uint8)


def bar_204(lo, hi):
    m = np.zeros((32, 48), np.uint8)
    m[lo:hi, 2:6] = 1
    return m


def uncompressed_counts(m):
    """COCO's uncompressed RLE: column-major runs, starting with a run of zeros."""
    flat = np.asfortranarray(m).ravel(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return counts


def compressed(m):
    from pycocotools import mask as mask_api

    rle = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_image(path, h, w, orientation=None, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    if orientation is None:
        im.save(path, quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, quality=90, exif=exif)


def instances():
    anns = [
        {"id": 101, "image_id": 1, "segmentation": [rect(10, 5, 30, 20)], "iscrowd": 0},
        {"id": 102, "image_id": 1, "segmentation": [rect(0, 0, 10, 10), rect(5, 5, 15, 15)], "iscrowd": 0},
        {"id": 103, "image_id": 1, "segmentation": {"size": [40, 60], "counts": uncompressed_counts(rle_mask_103())},
         "iscrowd": 1},
        {"id": 201, "image_id": 2, "segmentation": compressed(disk_201()), "iscrowd": 0},
        {"id": 202, "image_id": 2, "segmentation": [[1, 1, 5, 5]], "iscrowd": 0},  # two points: broken
        {"id": 203, "image_id": 2, "segmentation": {"size": [10, 10], "counts": [100]}, "iscrowd": 1},  # wrong size
        {"id": 204, "image_id": 2, "segmentation": [compressed(bar_204(0, 10)), compressed(bar_204(5, 20))],
         "iscrowd": 0},
        {"id": 205, "image_id": 2, "segmentation": [], "iscrowd": 0},
        {"id": 206, "image_id": 2, "segmentation": {"size": [32, 48], "counts": "0Q"}, "iscrowd": 0},  # corrupt
        {"id": 301, "image_id": 3, "segmentation": [rect(2, 2, 6, 6)], "iscrowd": 0},
    ]
    images = [{"id": k, "file_name": n, "height": h, "width": w} for k, (n, h, w) in IMAGES.items()]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def write_coco_images(root, image_dir="images/mscoco/images/train2014"):
    for k, (name, h, w) in IMAGES.items():
        if k != 3:  # image 3 is missing on disk
            write_image(os.path.join(root, image_dir, name), h, w, seed=k)


def sent(text, i, **extra):
    return {"sent": text, "raw": text, "sent_id": i, "tokens": text.split(), **extra}


REFER_REFS = [  # (ref_id, image_id, ann_id, split, sentences)
    (1, 1, 101, "val", [" The Left Man ", "man on left"]),
    (2, 1, 102, "val", ["two boxes"]),
    (3, 1, 103, "testA", ["rle thing"]),
    (4, 2, 201, "val", ["round thing"]),
    (5, 2, 202, "val", ["broken polygon"]),
    (6, 2, 203, "val", ["wrong size"]),
    (7, 2, 999, "val", ["missing annotation"]),
    (8, 2, 204, "val", ["two bars"]),
    (9, 2, 205, "testB", ["empty segmentation"]),
    (10, 3, 301, "val", ["no image file"]),
    (11, 1, 101, "train", ["train sentence"]),
    (12, 2, 206, "val", ["corrupt rle"]),
]


def write_refer(root, dataset="refcoco", split_by="unc", image_dir="images/mscoco/images/train2014"):
    folder = os.path.join(root, dataset)
    os.makedirs(folder, exist_ok=True)
    refs, sid = [], 0
    for ref_id, image_id, ann_id, split, texts in REFER_REFS:
        if dataset == "refcocog" and split in ("testA", "testB"):
            split = "test"
        sents = []
        for t in texts:
            sents.append(sent(t, sid))
            sid += 1
        refs.append({"ref_id": ref_id, "image_id": image_id, "ann_id": ann_id, "split": split, "category_id": 1,
                     "sent_ids": [s["sent_id"] for s in sents], "sentences": sents, "file_name": "unused"})
    with open(os.path.join(folder, f"refs({split_by}).p"), "wb") as f:
        pickle.dump(refs, f, protocol=2)
    with open(os.path.join(folder, "instances.json"), "w") as f:
        json.dump(instances(), f)
    write_coco_images(root, image_dir)
    return root


GREFS = [  # (ref_id, image_id, ann_id, no_target, split, sentences)
    (1, 1, [101], False, "val", ["the left box"]),
    (2, 1, [101, 102], False, "val", ["All boxes."]),
    (3, 1, [-1], True, "val", ["the giraffe"]),
    (4, 1, [-1], False, "val", ["inconsistent flag"]),
    (5, 1, [101, -1], False, "val", ["mixed ids"]),
    (6, 2, [201], False, "testA", ["round thing"]),
]


def write_grefcoco(root, split_by="unc"):
    folder = os.path.join(root, "grefcoco")
    os.makedirs(folder, exist_ok=True)
    refs, sid = [], 0
    for ref_id, image_id, ann_id, no_target, split, texts in GREFS:
        sents = []
        for t in texts:
            sents.append(sent(t, sid))
            sid += 1
        refs.append({"ref_id": ref_id, "image_id": image_id, "ann_id": ann_id, "no_target": no_target,
                     "split": split, "category_id": [1], "sent_ids": [s["sent_id"] for s in sents],
                     "sentences": sents})
    with open(os.path.join(folder, f"grefs({split_by}).json"), "w") as f:
        json.dump(refs, f)
    with open(os.path.join(folder, "instances.json"), "w") as f:
        json.dump(instances(), f)
    write_coco_images(root)
    return root


FP_REFS = [  # (ref_id, image_id, ann_id, split, sentences as (text, flags))
    (1, 1, 101, "val", [("man in red", {"is_false_premise": False, "gt_sent": ""}),
                        ("Man in Blue", {"is_false_premise": True, "gt_sent": "Man in red"})]),
    (2, 1, 102, "val", [("a dog", {"exist": False}), ("boxes", {"exist": True})]),
    (3, 1, 101, "val", [("no flags at all", {})]),
    (4, 1, [101, 102], "val", [("every box", {"is_false_premise": False})]),
    (5, 1, 101, "train", [("train sentence", {})]),
]


def write_fprefcoco(root, dataset="fprefcoco", split_by="berkeley_exclude_unified"):
    folder = os.path.join(root, dataset)
    os.makedirs(folder, exist_ok=True)
    refs, sid = [], 0
    for ref_id, image_id, ann_id, split, items in FP_REFS:
        sents = []
        for text, flags in items:
            sents.append(sent(text, sid, **flags))
            sid += 1
        refs.append({"ref_id": ref_id, "image_id": image_id, "ann_id": ann_id, "split": split, "category_id": 1,
                     "sent_ids": [s["sent_id"] for s in sents], "sentences": sents})
    with open(os.path.join(folder, f"refs({split_by}).p"), "wb") as f:
        pickle.dump(refs, f, protocol=2)
    with open(os.path.join(folder, "instances.json"), "w") as f:
        json.dump(instances(), f)
    write_coco_images(root)
    return root


def write_reasonseg(root, split="val"):
    """ReasonSeg: four images (sorted: img_a .. img_d), a PNG that must be ignored.

    * img_a (30x40): "flag" over everything (skipped); target [5..20]x[5..15] = 16*11 = 176
      pixels with an ignore [8..12]x[8..10] = 5*3 = 15 on top -> 161 ones, 15 x 255. JSON in
      cp1252 (LISA's fallback); two texts.
    * img_b (25x35): ignore [0..30]x[0..20] = 31*21 = 651 under a target at float vertices
      that truncate to [10..14]x[10..12] = 15 -> 15 ones, 636 x 255.
    * img_c: stored 20 wide, 10 high with EXIF orientation 6 -> 20 high, 10 wide; target
      covers it all (200).
    * img_d (12x12): a shape with a NaN point -> SampleError.
    """
    folder = os.path.join(root, split)
    os.makedirs(folder, exist_ok=True)
    box = lambda x0, y0, x1, y1: [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]  # noqa: E731
    specs = {
        "img_a": ((30, 40), None, {"text": ["Where would you sit in the café? ", "second query"], "is_sentence": True,
                                   "shapes": [{"label": "flag", "points": box(0, 0, 39, 29)},
                                              {"label": "target", "points": box(5, 5, 20, 15)},
                                              {"label": "ignore", "points": box(8, 8, 12, 10)}]}),
        "img_b": ((25, 35), None, {"text": ["the cup"], "is_sentence": False,
                                   "shapes": [{"label": "ignore", "points": box(0, 0, 30, 20)},
                                              {"label": "target", "points": [[10.9, 10.2], [14.7, 10], [14.2, 12.9],
                                                                             [10, 12]]}]}),
        "img_c": ((10, 20), 6, {"text": ["rotated"], "is_sentence": False,
                                "shapes": [{"label": "target", "points": box(0, 0, 9, 19)}]}),
        "img_d": ((12, 12), None, {"text": ["broken"], "is_sentence": False,
                                   "shapes": [{"label": "target", "points": [[1, 1], [float("nan"), 3], [5, 5]]}]}),
    }
    for i, (stem, ((h, w), orientation, anno)) in enumerate(specs.items()):
        write_image(os.path.join(folder, stem + ".jpg"), h, w, orientation, seed=i)
        text = json.dumps(anno, ensure_ascii=False)
        with open(os.path.join(folder, stem + ".json"), "wb") as f:
            f.write(text.encode("cp1252" if stem == "img_a" else "utf-8"))
    Image.new("RGB", (4, 4)).save(os.path.join(folder, "notes.png"))
    return root
