"""Validation during training: teacher-forced gIoU / cIoU, and the trivial predictors.

Teacher forcing is LISA's validation (dvlab-research/LISA ``train_ds.py`` ``validate``): the
prompt plus the reference answer "Sure, [SEG]." goes through the model in one forward, and
the mask of that [SEG] (logits > 0) is scored against the target, with ``IGNORE`` pixels
excluded. Only samples with a target are scored. The all-foreground and all-background
predictors give the floor a trained model has to beat.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback

from sasp.data import Sample, load_image
from sasp.metrics import intersection_union, mask_iou

from .collator import DEFAULT_ANSWER


def _summary(inter: List[int], union: List[int]) -> Dict[str, float]:
    i = torch.tensor(inter, dtype=torch.float64)
    u = torch.tensor(union, dtype=torch.float64)
    n = len(inter)
    return {
        "giou": float(mask_iou(i, u).sum() / n) if n else float("nan"),
        "ciou": float(i.sum() / (u.sum() + 1e-10)) if n else float("nan"),
        "n": n,
    }


def scored_samples(samples: Sequence[Sample]) -> List[Sample]:
    """The samples validation scores: those with a target."""
    return [s for s in samples if s.has_target]


def trivial_scores(samples: Sequence[Sample]) -> Dict[str, Dict[str, float]]:
    """gIoU / cIoU of predicting every pixel foreground ("all_foreground") and none
    ("all_background") on the samples with a target."""
    out: Dict[str, Dict[str, List[int]]] = {"all_foreground": {"i": [], "u": []}, "all_background": {"i": [], "u": []}}
    for s in scored_samples(samples):
        target = np.asarray(s.target())
        for name, value in (("all_foreground", 1), ("all_background", 0)):
            i, u = intersection_union(np.full(target.shape, value, np.uint8), target)
            out[name]["i"].append(int(i[0]))
            out[name]["u"].append(int(u[0]))
    return {k: _summary(v["i"], v["u"]) for k, v in out.items()}


@torch.no_grad()
def evaluate_giou(
    model: nn.Module,
    processor: Any,
    samples: Sequence[Sample],
    batch_size: int = 8,
    answer: str = DEFAULT_ANSWER,
) -> Dict[str, float]:
    """Teacher-forced gIoU / cIoU of ``model`` on the samples with a target.

    Args:
        model: a ``SegLlavaForCausalLM`` (bare, DDP or PEFT); put back in its training mode.
        processor: its ``SegLlavaProcessor``.
        samples: a reader or any sequence of ``Sample``.
        answer: the teacher-forced answer (one [SEG]).

    Returns:
        {"giou", "ciou", "n"}: gIoU = mean per-sample IoU (1.0 for an empty union), cIoU =
        summed intersection / summed union, n = samples scored.
    """
    from .trainer import core_model

    core = core_model(model)
    was_training = core.training
    core.eval()
    inter: List[int] = []
    union: List[int] = []
    device = next(core.parameters()).device
    todo = scored_samples(samples)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images = [load_image(s.image) for s in chunk]
            batch = processor(images=images, prompts=[s.query for s in chunk], answers=[answer] * len(chunk))
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model.segment(**batch, max_new_tokens=0)
            for s, masks in zip(chunk, out.masks):
                if masks.shape[0] == 0:
                    raise ValueError(f"the teacher-forced answer {answer!r} has no [SEG]")
                i, u = intersection_union(masks[:1].cpu(), np.asarray(s.target())[None])
                inter.append(int(i[0]))
                union.append(int(u[0]))
    finally:
        core.train(was_training)
    return _summary(inter, union)


class GIoUCallback(TrainerCallback):
    """Evaluate teacher-forced gIoU every ``every`` optimizer steps (and at step 0 and at the
    end) on the main process; append ``{"step", "giou", "ciou", "n", "seconds"}`` to
    ``self.curve`` and rewrite ``path`` (JSON) after each evaluation. A resumed run keeps the
    evaluations ``path`` holds up to its checkpoint's step."""

    def __init__(self, processor: Any, samples: Sequence[Sample], every: int, path: Optional[str] = None, batch_size: int = 8):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.processor = processor
        self.samples = scored_samples(samples)
        self.every = every
        self.path = path
        self.batch_size = batch_size
        self.curve: List[Dict[str, Any]] = []
        self._done: set = set()

    def _evaluate(self, state: Any, model: nn.Module) -> None:
        if not state.is_world_process_zero or state.global_step in self._done:
            return
        self._done.add(state.global_step)
        t0 = time.perf_counter()
        scores = evaluate_giou(model, self.processor, self.samples, self.batch_size)
        self.curve.append({"step": state.global_step, **scores, "seconds": time.perf_counter() - t0})
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "w") as f:
                json.dump(self.curve, f, indent=1)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Optional[nn.Module] = None, **kwargs: Any):
        if state.global_step > 0 and self.path and os.path.isfile(self.path):  # resumed: keep the evaluations so far
            with open(self.path) as f:
                self.curve = [c for c in json.load(f) if c["step"] <= state.global_step]
            self._done = {c["step"] for c in self.curve}
        if state.global_step == 0 and model is not None:
            self._evaluate(state, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Optional[nn.Module] = None, **kwargs: Any):
        if model is not None and (state.global_step % self.every == 0 or state.global_step >= state.max_steps):
            self._evaluate(state, model)
