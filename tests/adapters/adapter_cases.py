"""One table of adapter cases (PEFT ``test_custom_models`` style) and the tiny family builders.

(A module of its own, not conftest.py: tests/conftest.py already owns that module name.)

Each ``Case`` names a family, its ``wrap_*``, its spec, a training batch (images of different
sizes, rows with zero, one or several [SEG], [REJ] for GSVA) and the inference calls of that
family (``evaluate`` with generation for LISA and SESAME, ``model_forward(inference=True)``
for all, GSVA's ``reeval``). The test bodies in ``test_adapters.py`` run over the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

import pytest
import torch

from sasp import SasPConfig
from sasp.adapters import GSVA_SPEC, LISA_SPEC, SESAME_SPEC, SegPipelineSpec, wrap_gsva, wrap_lisa, wrap_sesame

testing = pytest.importorskip("sasp.testing", reason="needs transformers and segment_anything")
SEG, REJ = testing.SEG, testing.REJ

CFG = SasPConfig(num_points=6)
"""Small K for the tiny 8 x 8 token grid (4 x 4 after down-sampling)."""

N_P, CLIP_PX, SAM_PX = 64, 32, 64
"""The tiny models' patch tokens, CLIP input resolution and SAM input size."""

IMAGES = [(48, 40), (30, 64)]
"""Original (H, W) of the two images of every batch: portrait and landscape."""


@dataclass(frozen=True)
class Case:
    """One family: how to build, wrap and feed it."""

    family: str
    wrap: Callable[..., Any]
    spec: SegPipelineSpec
    train_rows: Sequence[Sequence[Sequence[int]]]
    infer_rows: Sequence[Sequence[int]]
    eval_prompts: Sequence[Sequence[int]] = ()
    eval_allow: Sequence[int] = ()
    infer_kwargs: Dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.family


CASES: List[Case] = [
    Case(
        family="lisa",
        wrap=wrap_lisa,
        spec=LISA_SPEC,
        # image 0: a row with one [SEG], a row with two; image 1: a row with none, one with one
        train_rows=[[[7, SEG, 8], [SEG, 9, 10, SEG]], [[7, 8, 9], [11, SEG]]],
        infer_rows=[[7, SEG], [SEG, 8, SEG]],
        eval_prompts=[[7, 8], [SEG, 9]],  # generation adds [SEG]s: one or several per row
        eval_allow=[SEG],
    ),
    Case(
        family="gsva",
        wrap=wrap_gsva,
        spec=GSVA_SPEC,
        # one conversation per image (GSVA's training layout), [SEG] and [REJ] mixed
        train_rows=[[[7, SEG, REJ, SEG]], [[REJ, 8, SEG]]],
        infer_rows=[[7, SEG, REJ], [REJ, SEG, 8, SEG], [REJ, 9]],
        infer_kwargs={"reeval": True},
    ),
    Case(
        family="sesame",
        wrap=wrap_sesame,
        spec=SESAME_SPEC,
        train_rows=[[[7, SEG, 8], [SEG, 9, 10, SEG]], [[7, 8, 9], [11, SEG]]],
        infer_rows=[[7, SEG], [SEG, 8, SEG]],
        eval_prompts=[[7, SEG], [8, 9]],  # row 1 has no [SEG]: SESAME gives it None, no SAM call
        eval_allow=[7],
    ),
]


_STATES: Dict[str, Dict[str, torch.Tensor]] = {}


def build(family: str) -> torch.nn.Module:
    """A fresh tiny model of ``family``; every call returns the same weights."""
    model = testing.build_tiny(family, seed=0)
    if family in _STATES:
        model.load_state_dict(_STATES[family])
    else:
        _STATES[family] = {k: v.clone() for k, v in model.state_dict().items()}
    return model


def train_batch(case: Case, seed: int = 0) -> Dict[str, Any]:
    return testing.make_batch(case.family, IMAGES, case.train_rows, seed=seed)


def infer_batch(case: Case, seed: int = 1) -> Dict[str, Any]:
    batch = testing.make_batch(case.family, IMAGES[:1], [case.infer_rows], seed=seed, inference=True)
    batch.update(case.infer_kwargs)
    return batch


def eval_batch(case: Case, seed: int = 2) -> Dict[str, Any]:
    return testing.make_eval_batch(case.family, IMAGES, case.eval_prompts, seed=seed, max_new_tokens=2)


def row_sizes(batch: Dict[str, Any]) -> torch.Tensor:
    """(H, W) of every token row of a batch, written out independently of the adapters."""
    if "original_size_list" in batch:
        return torch.tensor([list(s) for s in batch["original_size_list"]])
    if "offset" not in batch:  # SESAME evaluate: one row per image
        return torch.tensor([list(s[1]) for s in batch["sam_mask_shape_list"]])
    if "label_list" in batch:
        sizes = [list(l.shape) for l in batch["label_list"]]
    else:
        sizes = [list(s[1]) for s in batch["sam_mask_shape_list"]]
    out: List[List[int]] = []
    off = batch["offset"].tolist()
    for i, size in enumerate(sizes):
        out += [size] * (off[i + 1] - off[i])
    return torch.tensor(out)


class Recorder:
    """Test-side hooks: the projection's input and every prompt-encoder call's final kwargs."""

    def __init__(self, model: torch.nn.Module):
        core = model
        self.hidden: List[torch.Tensor] = []
        self.prompts: List[Dict[str, Any]] = []
        self.handles = [
            core.model.text_hidden_fcs[0].register_forward_pre_hook(lambda m, a: self.hidden.append(a[0])),
            core.model.visual_model.prompt_encoder.register_forward_hook(
                lambda m, a, k, o: self.prompts.append(dict(k)), with_kwargs=True
            ),
        ]

    def points(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """All injected points of the recorded calls, in call order."""
        pts = [k["points"] for k in self.prompts if k.get("points") is not None]
        if not pts:
            return torch.zeros(0, CFG.num_points, 2), torch.zeros(0, CFG.num_points, dtype=torch.long)
        return torch.cat([p[0] for p in pts]), torch.cat([p[1] for p in pts])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
