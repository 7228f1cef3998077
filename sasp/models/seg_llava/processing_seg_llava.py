"""``SegLlavaProcessor``: transformers' ``LlavaProcessor`` (tokenizer + CLIP image processor)
plus SAM's preprocessing, and LM labels for training."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from transformers import BatchFeature, LlavaProcessor

from sasp.data.image import load_image

from .configuration_seg_llava import InputError

SEG_TOKEN = "[SEG]"
IMAGE_TOKEN = "<image>"
PROMPT_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
IGNORE_INDEX = -100


class SegLlavaProcessor:
    """Everything ``SegLlavaForCausalLM.segment`` / ``forward`` take, from images and prompts.

    ``processor(images, prompts, answers=None)`` returns a ``BatchFeature`` with
    ``input_ids`` and ``attention_mask`` (left-padded, N_p image tokens per row),
    ``pixel_values`` (CLIP), ``sam_pixel_values`` ([B, 3, S, S]: the SAM backend's
    preprocessing, ``sam_backend``: segment_anything's ResizeLongestSide(S), normalised,
    zero-padded by default), ``image_hw`` and ``sam_input_hw``. ``answers`` are appended after
    the template (teacher forcing, training); with ``return_labels=True`` the batch also has
    ``labels``: the answer's tokens and the end-of-sequence token after it, everything else -100.

    Images may be paths, PIL images or arrays; ``sasp.data.load_image`` reads them (EXIF
    orientation applied, 16-bit scaled, transparency composited on white).
    """

    def __init__(
        self,
        llava_processor: LlavaProcessor,
        sam_image_size: int = 1024,
        prompt_template: str = PROMPT_TEMPLATE,
        sam_backend: str = "segment_anything",
    ):
        self.llava_processor = llava_processor
        self.sam_image_size = int(sam_image_size)
        self.prompt_template = prompt_template
        self.sam_backend = sam_backend

    @property
    def tokenizer(self):
        return self.llava_processor.tokenizer

    @property
    def image_processor(self):
        return self.llava_processor.image_processor

    def build_prompt(self, prompt: str, row: int = 0) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"prompt {row} is empty; say what to segment, e.g. 'Segment the red circle.'")
        for special in (SEG_TOKEN, IMAGE_TOKEN):
            if special in prompt:
                raise InputError(f"prompt {row} contains the special token {special}; remove it")
        return self.prompt_template.format(prompt=prompt.strip())

    def preprocess_sam(self, images: Sequence[np.ndarray]) -> Tuple[Tensor, Tensor]:
        """SAM's input [B, 3, S, S] and each image's size in it before padding [B, 2], by the
        SAM backend (``sam_backends``; segment_anything: ResizeLongestSide, (x - mean) / std,
        zero padding to S x S)."""
        from .sam_backends import get_backend

        return get_backend(self.sam_backend).preprocess(images, self.sam_image_size)

    def load_images(self, images: Sequence[Any]) -> List[np.ndarray]:
        arrays = []
        for i, img in enumerate(images):
            try:
                arrays.append(load_image(img))
            except FileNotFoundError:
                raise InputError(f"image {i}: file not found: {img}") from None
            except ValueError as err:
                raise InputError(f"image {i}: {err}") from None
        return arrays

    def __call__(
        self,
        images: Sequence[Any],
        prompts: Sequence[str],
        answers: Optional[Sequence[Optional[str]]] = None,
        return_labels: bool = False,
    ) -> BatchFeature:
        from PIL import Image

        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) != len(prompts):
            raise InputError(f"{len(images)} images for {len(prompts)} prompts; give one image per prompt")
        if answers is not None and len(answers) != len(prompts):
            raise InputError(f"{len(answers)} answers for {len(prompts)} prompts")
        if return_labels and answers is None:
            raise InputError("return_labels needs answers")
        arrays = self.load_images(images)
        heads = [self.build_prompt(p, i) for i, p in enumerate(prompts)]
        tok = self.tokenizer
        end = tok.eos_token if return_labels and tok.eos_token else ""  # training: the answer ends the turn
        texts = heads if answers is None else [t + (" " + a if a else "") + end for t, a in zip(heads, answers)]
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = self.llava_processor(images=[Image.fromarray(a) for a in arrays], text=texts, return_tensors="pt", padding=True)
            if return_labels:  # the prompt's length in tokens, image expanded, per row
                lengths = [len(ids) for ids in self.llava_processor(
                    images=[Image.fromarray(a) for a in arrays], text=heads, return_tensors=None, padding=False)["input_ids"]]
        finally:
            tok.padding_side = side
        sam_pixel_values, sam_input_hw = self.preprocess_sam(arrays)
        batch: Dict[str, Any] = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "pixel_values": enc["pixel_values"],
            "sam_pixel_values": sam_pixel_values,
            "image_hw": torch.tensor([a.shape[:2] for a in arrays], dtype=torch.long),
            "sam_input_hw": sam_input_hw,
        }
        if return_labels:
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = IGNORE_INDEX
            valid = enc["attention_mask"].sum(1)
            for r, n in enumerate(lengths):
                pad = labels.shape[1] - int(valid[r])
                labels[r, : pad + n] = IGNORE_INDEX
            batch["labels"] = labels
        return BatchFeature(batch)

    def decode(self, sequences: Tensor, prompt_length: int = 0) -> List[str]:
        """The generated answers (tokens after ``prompt_length``), [SEG] kept, padding dropped."""
        tok = self.tokenizer
        skip = {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}
        return [
            tok.decode([t for t in row if t not in skip], skip_special_tokens=False).strip()
            for row in sequences[:, prompt_length:].tolist()
        ]

    def save_pretrained(self, path: Union[str, os.PathLike]) -> None:
        self.llava_processor.save_pretrained(path)
        with open(os.path.join(path, "sasp_processor.json"), "w") as f:
            meta = {"sam_image_size": self.sam_image_size, "prompt_template": self.prompt_template, "sam_backend": self.sam_backend}
            json.dump(meta, f, indent=2)

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike]) -> "SegLlavaProcessor":
        extra: Dict[str, Any] = {}
        meta = os.path.join(path, "sasp_processor.json")
        if os.path.isfile(meta):
            with open(meta) as f:
                extra = json.load(f)
        llava = LlavaProcessor.from_pretrained(path)
        saved = _saved_image_processor_type(path)
        if saved is not None and type(llava.image_processor).__name__ != saved:
            # some transformers versions load a saved slow image processor as its fast twin,
            # whose resizing differs slightly: load the class that was saved
            import transformers

            saved_class = getattr(transformers, saved, None)
            if saved_class is not None:
                llava.image_processor = saved_class.from_pretrained(path)
        return cls(llava, **extra)


def _saved_image_processor_type(path: Union[str, os.PathLike]) -> Optional[str]:
    """The image processor's class name as saved in ``path`` (None when not recorded)."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        with open(file) as f:
            saved = json.load(f)
        saved = saved.get("image_processor", saved)
        if isinstance(saved, dict) and isinstance(saved.get("image_processor_type"), str):
            return saved["image_processor_type"]
    return None
