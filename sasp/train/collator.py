"""Samples -> a training batch of ``SegLlavaForCausalLM.forward``.

Matches LISA's training batches (dvlab-research/LISA ``utils/dataset.py`` ``collate_fn``):
the prompt in the model's template, the answer ("Sure, [SEG].") after it and the end of
sequence after that; the LM loss covers the answer and the end of sequence only (prompt,
image tokens and padding are -100); each [SEG] of a row gets that row's target mask.
ReasonSeg's "ignore" pixels (``IGNORE``) count as background in the mask loss, as in LISA's
``ReasonSegDataset`` (``mask == 1``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from sasp.data import Sample, SampleError, load_image

IGNORE_LABEL = -100
DEFAULT_ANSWER = "Sure, [SEG]."
"""LISA's answer for a query with a target when the reader gives none."""


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SegCollator:
    """Turn a list of ``Sample`` into the model's training batch (runs in DataLoader workers).

    Args:
        processor: the model's ``SegLlavaProcessor`` (prompt template, tokenizer, CLIP and SAM
            preprocessing; left padding).
        seg_token: the [SEG] token's text.
        default_answer: the answer of a sample with a target and ``answer=None``.
        append_eos: end every answer with the tokenizer's end-of-sequence token (LLaVA's
            conversation template does), so that the model learns to stop.
        max_length: refuse rows longer than this many tokens (image tokens included); None:
            no limit here (the model's context still applies).

    Returns (``__call__``): a dict with ``input_ids``, ``attention_mask``, ``labels`` [B, T]
    (int64), ``pixel_values`` [B, 3, S, S], ``sam_pixel_values`` [B, 3, S', S'],
    ``image_hw`` / ``sam_input_hw`` [B, 2], ``gt_masks`` (list of B uint8 tensors
    [n_SEG, H, W], [0, H, W] for a row whose answer has no [SEG]) and ``sample_ids`` (list of
    B str, not a model input: ``SegTrainer`` logs and removes it).
    """

    def __init__(
        self,
        processor: Any,
        seg_token: str = "[SEG]",
        default_answer: str = DEFAULT_ANSWER,
        append_eos: bool = True,
        max_length: Optional[int] = None,
    ):
        self.processor = processor
        self.seg_token = seg_token
        self.default_answer = default_answer
        self.append_eos = append_eos
        self.max_length = max_length
        tok = processor.tokenizer
        self.seg_id = int(tok.convert_tokens_to_ids(seg_token))
        if self.seg_id == tok.unk_token_id:
            raise ValueError(f"the tokenizer has no {seg_token} token; add it first (SegLlavaForCausalLM.from_llava)")
        image_token = getattr(getattr(processor, "llava_processor", None), "image_token", None) or "<image>"
        self.image_id = int(tok.convert_tokens_to_ids(image_token))

    def answer_of(self, sample: Sample) -> str:
        """The text the model is trained to answer for ``sample``."""
        if sample.answer is not None:
            return sample.answer
        if sample.has_target:
            return self.default_answer
        raise SampleError(f"sample {sample.id}: no target and no answer; the reader must give its refusal text")

    def _answer_lengths(self, prompts: List[str], answers: List[str]) -> Tuple[List[int], List[List[int]]]:
        """Tokens of each answer in the processor's row: the tokens past the longest common
        prefix of the tokenised prompt and prompt + answer (a boundary token that merges the
        two counts as answer)."""
        tok = self.processor.tokenizer
        full = [p + (" " + a if a else "") for p, a in zip(prompts, answers)]
        p_ids = tok(prompts)["input_ids"]
        f_ids = tok(full)["input_ids"]
        return [len(f) - _common_prefix(p, f) for p, f in zip(p_ids, f_ids)], f_ids

    def __call__(self, samples: Sequence[Sample]) -> Dict[str, Any]:
        if len(samples) == 0:
            raise ValueError("cannot collate an empty batch")
        images, masks = [], []
        for s in samples:
            try:
                img = load_image(s.image)
            except SampleError:
                raise
            except Exception as err:  # noqa: BLE001 - PIL and numpy raise many kinds for a bad image
                raise SampleError(f"sample {s.id}: cannot read its image ({type(err).__name__}: {err})") from None
            target = np.asarray(s.target())
            if target.shape != img.shape[:2]:
                raise SampleError(f"sample {s.id}: target mask {target.shape} does not match its image {img.shape[:2]}")
            images.append(img)
            masks.append(torch.from_numpy(np.ascontiguousarray(target == 1).astype(np.uint8)))
        queries = [s.query for s in samples]
        answers = [self.answer_of(s) for s in samples]
        batch = self.processor(images=images, prompts=queries, answers=answers)
        prompts = [self.processor.build_prompt(q, i) for i, q in enumerate(queries)]
        lengths, full_ids = self._answer_lengths(prompts, answers)

        ids: Tensor = batch["input_ids"]
        attn: Tensor = batch["attention_mask"]
        tok = self.processor.tokenizer
        eos = tok.eos_token_id
        if self.append_eos and eos is not None and not all(f and f[-1] == eos for f in full_ids):
            ids = torch.cat([ids, ids.new_full((ids.shape[0], 1), eos)], 1)
            attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], 1)
            lengths = [n + 1 for n in lengths]
            full_ids = [f + [eos] for f in full_ids]
        labels = torch.full_like(ids, IGNORE_LABEL)
        T = ids.shape[1]
        gt_masks: List[Tensor] = []
        for b, (s, n) in enumerate(zip(samples, lengths)):
            row = ids[b, T - n :]
            if n > 0 and row.tolist() != full_ids[b][-n:]:
                raise ValueError(f"sample {s.id}: the processor's tokens do not end with the answer's tokens")
            labels[b, T - n :] = row
            n_seg = int((row == self.seg_id).sum())
            gt_masks.append(masks[b].unsqueeze(0).repeat(n_seg, 1, 1))
        labels[(attn == 0) | (ids == self.image_id)] = IGNORE_LABEL
        if self.max_length is not None and T > self.max_length:
            longest = int(attn.sum(1).argmax())
            raise SampleError(
                f"sample {samples[longest].id}: {int(attn[longest].sum())} tokens (image included) > max_length {self.max_length}"
            )
        out = dict(batch)
        out.update(input_ids=ids, attention_mask=attn, labels=labels, gt_masks=gt_masks, sample_ids=[s.id for s in samples])
        return out
