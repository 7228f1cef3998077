"""SegLlava in ``sasp compare``: a predictor and the arm builder behind ``--arms seg_llava``.

    sasp compare --data reasonseg --root ./dataset --split val --out runs/rs \\
        --baseline ./seg-llava-7b                              # same model, SasP off vs READ-7B
    sasp compare ... --baseline ./lisa-converted --candidate ./read-converted   # two checkpoints
    sasp compare ... --baseline ./m --preset-baseline read-7b --preset-candidate read-13b

By default every arm teacher-forces LISA's validation answer ("Sure, [SEG].") and scores the
mask of its [SEG], as LISA's ``validate`` does; ``--arm-arg generate=1`` generates the answer
instead (needed where the answer decides whether there is an object: gRefCOCO no-target and
FP-RefCOCO false-premise queries).
"""
from __future__ import annotations

import argparse
import copy
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sasp.config import PRESETS, SasPConfig
from sasp.data.base import Sample, instruction_for

from .configuration_seg_llava import InputError
from .modeling_seg_llava import SegLlavaForCausalLM
from .processing_seg_llava import SegLlavaProcessor

DEFAULT_ANSWER = "Sure, [SEG]."


def seg_llava_predictor(
    model: SegLlavaForCausalLM,
    processor: SegLlavaProcessor,
    answer: Optional[str] = DEFAULT_ANSWER,
    max_new_tokens: int = 32,
    device: Optional[str] = None,
):
    """A ``compare`` predictor: ``predict(samples, images) -> [Prediction]``.

    Args:
        answer: teacher-forced answer (LISA's validation); None generates the answer.
        max_new_tokens: answer length limit when generating.
    """
    from sasp.evaluate.arms import Prediction

    dev = torch.device(device) if device else next(model.parameters()).device

    def predict(samples: Sequence[Sample], images: Sequence[np.ndarray]) -> List[Prediction]:
        prompts = [instruction_for(s) for s in samples]
        answers = [answer] * len(samples) if answer is not None else None
        batch = processor(images=list(images), prompts=prompts, answers=answers)
        batch = {k: v.to(dev) for k, v in batch.items()}
        out = model.segment(**batch, max_new_tokens=0 if answer is not None else max_new_tokens)
        preds = []
        for masks, found in zip(out.masks, out.has_object.tolist()):
            union = masks.any(0).cpu().numpy() if masks.shape[0] else np.zeros(masks.shape[1:], bool)
            preds.append(Prediction(mask=union, has_object=bool(found)))
        return preds

    return predict


def _preset(name: Optional[str], default: Optional[str]) -> Optional[SasPConfig]:
    name = default if name is None else name
    if name is None or name.lower() in ("none", "off", "baseline"):
        return None
    if name.lower() not in PRESETS:
        raise InputError(f"unknown SasP preset {name!r}; choose none or one of {', '.join(PRESETS)}")
    return PRESETS[name.lower()]


def _load(path: str, device: str) -> Tuple[SegLlavaForCausalLM, SegLlavaProcessor]:
    from .loading import load_model
    from .tiny import build_tiny

    model, processor = build_tiny() if path == "tiny" else load_model(path)
    return model.to(device).eval(), processor


def seg_llava_arms(args: argparse.Namespace):
    """(baseline, candidate) ``Arm``s for ``sasp compare --arms seg_llava``.

    One checkpoint (``--baseline PATH``, or ``tiny`` for the offline random model): the same
    weights with ``--preset-baseline`` (default none: SasP off) and ``--preset-candidate``
    (default read-7b). Two checkpoints (``--baseline A --candidate B``): each with its own
    saved SasP setting unless a preset is given. ``--arm-arg``: ``generate=1``,
    ``answer=TEXT``, ``max_new_tokens=N``.
    """
    from sasp.evaluate.arms import Arm

    if not getattr(args, "baseline", None):
        raise InputError("--arms seg_llava needs --baseline PATH (a SegLlava folder, or 'tiny')")
    for path in (args.baseline, getattr(args, "candidate", None)):
        if path and path != "tiny" and not os.path.isdir(path):
            raise InputError(f"model folder not found: {path}")
    extra: Dict[str, Any] = dict(getattr(args, "arm_args", None) or {})
    generate = str(extra.get("generate", "0")).lower() in ("1", "true", "yes")
    answer = None if generate else extra.get("answer", DEFAULT_ANSWER)
    max_new = int(extra.get("max_new_tokens", 32))
    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    two = bool(getattr(args, "candidate", None))
    base_model, base_proc = _load(args.baseline, device)
    if two:
        cand_model, cand_proc = _load(args.candidate, device)
    else:
        cand_model, cand_proc = copy.deepcopy(base_model), base_proc
    arms = []
    for role, model, proc, path, preset, default in (
        ("baseline", base_model, base_proc, args.baseline, getattr(args, "preset_baseline", None), None if not two else "keep"),
        ("candidate", cand_model, cand_proc, args.candidate if two else args.baseline,
         getattr(args, "preset_candidate", None), "read-7b" if not two else "keep"),
    ):
        if not (preset is None and default == "keep"):
            model.config.with_sasp(_preset(preset, None if default == "keep" else default))
        cfg = model.config.sasp_config()
        describe = {
            "model": os.path.abspath(path) if path != "tiny" else "tiny", "family": "seg_llava",
            "sasp": None if cfg is None else {k: v for k, v in vars(cfg).items()},
            "sam_prompt": model.config.sam_prompt, "answer": answer, "max_new_tokens": max_new if generate else 0,
        }
        name = role if cfg is None else f"{role}-sasp"
        arms.append(Arm(name, seg_llava_predictor(model, proc, answer, max_new, device), describe))
    return tuple(arms)
