"""The trained tiny SegLlava shipped in sasp/models/seg_llava/pretrained/tiny-synthetic/.

Its test-set gIoU was measured once with ``sasp compare`` (benchmarks/RESULTS.md, "Training
with SasP on the synthetic task"); these tests recompute it with the same predictor, batching
and metric, and fail when the shipped files, the loader or the model code change what the
model does. The default ``sasp demo`` must segment its scene well (IoU >= 0.5).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the shipped model needs transformers")
pytest.importorskip("segment_anything", reason="the shipped model needs segment_anything")

from sasp.data.base import instruction_for  # noqa: E402
from sasp.data.synthetic import SyntheticReasonSeg  # noqa: E402
from sasp.metrics import giou_from_scores, intersection_union, sample_scores  # noqa: E402
from sasp.models.seg_llava import load_pretrained_tiny, seg_llava_predictor  # noqa: E402
from sasp.models.seg_llava import pretrained_tiny  # noqa: E402

TEST_SAMPLES = 200
MEASURED_TEST_GIOU = 0.20577272002970443
"""gIoU (LISA's protocol, teacher-forced "Sure, [SEG].", batches of 8) on the first 200
synthetic test samples, measured with ``sasp compare`` (the candidate arm of seed 2 in
benchmarks/RESULTS.md); this test's computation gave the same value to the last digit."""
MARGIN = 0.0012
"""Allowed drop: float summation order differs across CPUs and torch builds, so a few masks may
gain or lose border pixels. 0.0012 is a summed IoU loss of 0.24 over the 200 samples (about a
quarter of one sample's full score); a real change to the model or its pipeline moves far more."""
SHIPPED_SASP = {"num_points": 30, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 1}


@pytest.fixture(scope="module")
def shipped():
    if not pretrained_tiny.has_pretrained_tiny():
        pytest.fail(f"the shipped model is missing from {pretrained_tiny.PRETRAINED_TINY_DIR}")
    return load_pretrained_tiny()


def test_shipped_folder_is_small_safetensors_with_its_sasp_setting():
    folder = pretrained_tiny.PRETRAINED_TINY_DIR
    files = os.listdir(folder)
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert sum(os.path.getsize(os.path.join(folder, f)) for f in files) < 10 * 2**20
    with open(os.path.join(folder, "config.json")) as f:
        sasp = json.load(f)["sasp"]
    assert {k: sasp[k] for k in SHIPPED_SASP} == SHIPPED_SASP


def test_shipped_model_reaches_its_measured_test_giou(shipped):
    model, processor = shipped
    predict = seg_llava_predictor(model, processor, device="cpu")
    reader = SyntheticReasonSeg("test", size=TEST_SAMPLES)
    samples = [reader[i] for i in range(len(reader))]
    inter, union, empty, found = [], [], [], []
    for start in range(0, len(samples), 8):
        chunk = samples[start:start + 8]
        for s, p in zip(chunk, predict(chunk, [s.image for s in chunk])):
            target = s.target()
            i, u = intersection_union(p.mask.astype(np.uint8), target)
            inter.append(int(i[0]))
            union.append(int(u[0]))
            empty.append(not (target == 1).any())
            found.append(p.has_object)
    giou = giou_from_scores(sample_scores(inter, union, empty, found)[0])
    assert giou >= MEASURED_TEST_GIOU - MARGIN, (giou, MEASURED_TEST_GIOU)
    # and not above it either: the same model without its SasP points scores 0.0020 higher
    # (benchmarks/RESULTS.md), so a pipeline that silently dropped the points would show here
    assert giou <= MEASURED_TEST_GIOU + MARGIN, (giou, MEASURED_TEST_GIOU)
    assert all(found)  # teacher-forced: every row has its [SEG]
    assert instruction_for(samples[0]) == samples[0].instruction


def test_default_demo_segments_its_scene(tmp_path):
    from sasp import demo

    res = demo.run_demo(out=str(tmp_path / "demo.png"), progress=False, device="cpu")
    sample = demo.demo_sample()
    assert res.trained and demo.DEFAULT_PROMPT == sample.instruction
    assert res.answer == "sure, [SEG]." and res.has_object  # generated (the tiny tokenizer lower-cases words)
    i, u = intersection_union(res.masks.any(0).numpy().astype(np.uint8), sample.target())
    assert float(i[0]) / float(u[0]) >= 0.5
    labels = res.labels[0]
    assert (labels == 1).any() and (labels == 0).any()


def test_demo_falls_back_to_the_random_tiny_model_with_a_note(tmp_path, monkeypatch):
    from sasp import demo

    monkeypatch.setattr(pretrained_tiny, "PRETRAINED_TINY_DIR", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="not installed"):
        load_pretrained_tiny()
    res = demo.run_demo(out=str(tmp_path / "d.png"), progress=False, device="cpu")
    assert not res.trained and res.answer == demo.TINY_ANSWER
    assert any("random" in n for n in res.notes)
