"""Shared pieces of the training tests: a tiny coloured-rectangles reader and run helpers."""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional

import numpy as np
import torch

from sasp.data import Reader, Sample

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def _rect_mask(h: int, w: int, box: tuple) -> np.ndarray:
    y0, x0, y1, x1 = box
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


class Rects(Reader):
    """``n`` images (sizes 40..72 px) with two rectangles of different colours; the query
    names one colour, its rectangle is the target. Deterministic in ``seed``."""

    name = "rects"

    def __init__(self, n: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        names = sorted(COLOURS)
        self.items = []
        for i in range(n):
            h, w = (int(v) for v in rng.integers(40, 73, 2))
            a, b = rng.choice(len(names), 2, replace=False)
            img = np.full((h, w, 3), 90, np.uint8)
            boxes = []
            for c in (a, b):
                y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
                box = (y0, x0, y0 + int(rng.integers(8, h // 2)), x0 + int(rng.integers(8, w // 2)))
                img[box[0] : box[2], box[1] : box[3]] = COLOURS[names[c]]
                boxes.append(box)
            # the target is what is visible of the first rectangle
            target = _rect_mask(h, w, boxes[0]) & (1 - _rect_mask(h, w, boxes[1]))
            self.items.append((f"rects/{seed}/{i}", img, f"segment the {names[a]} box.", target))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        sid, img, query, target = self.items[index]
        return Sample(id=sid, image=img, query=query, target=functools.partial(np.array, target))


def training_args(output_dir: str, **overrides: Any):
    """Small, deterministic CPU ``TrainingArguments`` for the tests."""
    from transformers import TrainingArguments

    kw: Dict[str, Any] = dict(
        output_dir=output_dir,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        seed=0,
        lr_scheduler_type="constant",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


def flat_params(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def rects(root: Optional[str] = None, split: Optional[str] = None, n: int = 8, seed: int = 0) -> Rects:
    """``--data train_cases:rects`` factory (the command's ``factory(root, split=..., **kw)``)."""
    return Rects(n, seed)


def parse_train_args(argv):
    """``sasp train ARGV`` parsed, for ``sasp.train.command.run``."""
    import argparse

    from sasp.train.command import configure_parser

    return configure_parser(argparse.ArgumentParser(prog="sasp train")).parse_args(argv)
