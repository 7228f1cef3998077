"""Teacher-forced validation and the trivial predictors, against hand-computed numbers."""
from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import numpy as np
import pytest

from sasp.data import IGNORE, Sample
from sasp.train.validation import GIoUCallback, evaluate_giou, trivial_scores
from train_cases import Rects


def _sample(sid, mask, has_target=True):
    return Sample(id=sid, image=np.zeros((*mask.shape, 3), np.uint8), query="segment the red box.",
                  target=functools.partial(np.array, mask), has_target=has_target)


def test_trivial_predictors_by_hand():
    a = np.zeros((4, 5), np.uint8)
    a[0, :2] = 1  # 2 of 20 pixels
    b = np.zeros((2, 2), np.uint8)
    b[0, 0], b[1, 1] = 1, IGNORE  # 1 of 3 scored pixels
    c = np.zeros((3, 3), np.uint8)  # no target pixels: empty union for all-background
    skipped = _sample("fp", np.ones((2, 2), np.uint8), has_target=False)
    got = trivial_scores([_sample("a", a), _sample("b", b), _sample("c", c), skipped])
    fg, bg = got["all_foreground"], got["all_background"]
    assert fg["n"] == bg["n"] == 3
    assert fg["giou"] == pytest.approx((2 / (20 + 1e-5) + 1 / (3 + 1e-5) + 0.0) / 3)
    assert fg["ciou"] == pytest.approx(3 / (20 + 3 + 9))
    assert bg["giou"] == pytest.approx(1 / 3)  # only the empty target scores (IoU 1, LISA)
    assert bg["ciou"] == 0.0


def test_evaluate_giou_scores_the_teacher_forced_masks():
    from sasp.metrics import intersection_union
    from sasp.models.seg_llava import build_tiny

    model, processor = build_tiny(seed=1)
    model.train()
    samples = [Rects(3)[i] for i in range(3)]
    got = evaluate_giou(model, processor, samples, batch_size=2)
    assert model.training  # restored
    batch = processor(images=[s.image for s in samples], prompts=[s.query for s in samples],
                      answers=["Sure, [SEG]."] * 3)
    model.eval()
    masks = model.segment(**batch, max_new_tokens=0).masks
    ious = []
    for s, m in zip(samples, masks):
        i, u = intersection_union(m[:1], s.target()[None])
        ious.append(float(i[0]) / (float(u[0]) + 1e-5) if u[0] > 0 else 1.0)
    assert got["n"] == 3 and 0 < got["giou"] == pytest.approx(float(np.mean(ious)))


def test_callback_keeps_the_curve_across_a_resume(tmp_path):
    path = str(tmp_path / "curve.json")
    with open(path, "w") as f:
        json.dump([{"step": 0, "giou": 0.1}, {"step": 10, "giou": 0.2}, {"step": 20, "giou": 0.3}], f)
    cb = GIoUCallback(processor=None, samples=[], every=10, path=path)
    state = SimpleNamespace(global_step=10, is_world_process_zero=True, max_steps=30)
    cb.on_train_begin(None, state, None, model=None)
    assert [c["step"] for c in cb.curve] == [0, 10]  # step 20 came after the checkpoint: dropped
    with pytest.raises(ValueError, match="every must be >= 1"):
        GIoUCallback(processor=None, samples=[], every=0)
