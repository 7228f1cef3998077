"""SegCollator: LISA's labels (answer + end of sequence only), one mask per [SEG], and the
batch survives Trainer's input preparation."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from sasp.data import IGNORE, Sample, SampleError
from sasp.train.collator import IGNORE_LABEL, SegCollator
from train_cases import Rects


@pytest.fixture(scope="module")
def processor():
    from sasp.models.seg_llava import build_tiny

    return build_tiny(seed=0)[1]


def _sample(sid, h, w, answer=None, has_target=True, query="segment the red box.", mask=None):
    m = np.zeros((h, w), np.uint8) if mask is None else mask
    return Sample(id=sid, image=np.full((h, w, 3), 120, np.uint8), query=query, target=functools.partial(np.array, m),
                  has_target=has_target, answer=answer)


def test_labels_cover_the_answer_and_end_of_sequence_only(processor):
    tok = processor.tokenizer
    samples = [_sample("a", 40, 60), _sample("b", 50, 30, query="segment the big yellow box on the left.")]
    batch = SegCollator(processor)(samples)
    ids, labels, attn = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == attn.shape
    assert batch["sample_ids"] == ["a", "b"]
    for b in range(2):
        kept = labels[b][labels[b] != IGNORE_LABEL].tolist()
        assert tok.decode(kept) == tok.decode(tok("sure, [SEG].")["input_ids"] + [tok.eos_token_id])
        n = len(kept)
        assert torch.equal(labels[b, -n:], ids[b, -n:])  # the end of each (left-padded) row
        assert (labels[b, :-n] == IGNORE_LABEL).all()
    assert (labels[attn == 0] == IGNORE_LABEL).all() and (attn[0] == 0).any() != (attn[1] == 0).any()
    image_id = tok.convert_tokens_to_ids("<image>")
    assert (ids == image_id).sum(1).tolist() == [144, 144] and (labels != image_id).all()


def test_one_mask_per_seg_and_none_without_seg(processor):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:10, 5:20] = 1
    mask[20:25, 0:4] = IGNORE
    samples = [
        _sample("one", 30, 40, mask=mask),
        _sample("two", 30, 40, answer="[SEG] and [SEG].", mask=mask),
        _sample("none", 20, 25, answer="no.", has_target=False),
    ]
    gt = SegCollator(processor)(samples)["gt_masks"]
    assert [tuple(g.shape) for g in gt] == [(1, 30, 40), (2, 30, 40), (0, 20, 25)]
    assert gt[0].dtype == torch.uint8
    expected = torch.from_numpy((mask == 1).astype(np.uint8))  # ignore pixels count as background (LISA)
    assert torch.equal(gt[0][0], expected) and torch.equal(gt[1][1], expected)


def test_bad_samples_raise_one_line_naming_the_sample(processor):
    coll = SegCollator(processor)
    with pytest.raises(SampleError, match="sample x: no target and no answer"):
        coll([_sample("x", 20, 20, has_target=False)])
    with pytest.raises(SampleError, match=r"sample y: target mask \(10, 10\) does not match its image \(20, 20\)"):
        coll([_sample("y", 20, 20, mask=np.zeros((10, 10), np.uint8))])
    with pytest.raises(SampleError, match="sample z: cannot read its image"):
        coll([Sample(id="z", image="/nonexistent.png", query="q", target=lambda: np.zeros((2, 2)))])
    with pytest.raises(SampleError, match="max_length 20"):
        SegCollator(processor, max_length=20)([_sample("w", 20, 20)])


def test_batch_goes_through_trainer_input_preparation_and_model(processor, tmp_path):
    from sasp.models.seg_llava import build_tiny
    from sasp.train.trainer import SegTrainer
    from train_cases import training_args

    model = build_tiny(seed=0)[0]
    coll = SegCollator(processor)
    trainer = SegTrainer(model=model, args=training_args(str(tmp_path)), train_dataset=Rects(4), data_collator=coll)
    batch = trainer._prepare_inputs(coll([Rects(4)[i] for i in range(3)]))
    assert isinstance(batch["gt_masks"], list) and len(batch["gt_masks"]) == 3
    assert batch["sample_ids"] == ["rects/0/0", "rects/0/1", "rects/0/2"]
    loss = trainer.compute_loss(model.train(), batch)
    assert "sample_ids" not in batch and torch.isfinite(loss)
    model.zero_grad()
    loss.backward()
    assert model.visual_model.mask_decoder.output_upscaling[0].weight.grad.abs().sum() > 0
