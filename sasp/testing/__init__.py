"""Tiny LISA-family models to test SasP adapter specs against (like ``torch.testing``).

Written for sasp, they reproduce the forward structure of each family where a spec looks, on
top of transformers' Llama/CLIP classes and segment_anything's SAM classes, with random
weights (a pass takes milliseconds on a CPU)::

    from sasp.testing import SEG, build_tiny, make_batch
    model = sasp.wrap_lisa(build_tiny("lisa"))
    out = model(**make_batch("lisa", [(48, 40)], [[[7, SEG]]]))

Modules:
    sam: ``TextPromptEncoder`` (the LISA fork of SAM's prompt encoder) and ``tiny_sam``.
    llava: ``TinyLlavaForCausalLM`` (LLaVA-1.x as the family vendors it), the token ids.
    families: ``TinyLISA``, ``TinyGSVA``, ``TinySESAME``, ``TinyREAD``, ``build_tiny``.
    batches: ``make_batch`` / ``make_eval_batch``, the families' call arguments.

Importing this package imports transformers and segment_anything (``pip install "sasp[hf]"``);
it does not import sasp's own model (``sasp.models.seg_llava``), only its SAM builder and
LISA's losses.
"""
from __future__ import annotations

try:
    import segment_anything  # noqa: F401
    import transformers  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(f"sasp.testing needs transformers and segment_anything ({err}): pip install \"sasp[hf]\"") from err

from .batches import make_batch, make_eval_batch
from .families import FAMILIES, TinyGSVA, TinyLISA, TinyREAD, TinySESAME, allow_only, build_tiny
from .llava import BOS, EOS, IGNORE_INDEX, IMAGE_TOKEN_INDEX, PAD, REJ, SEG, VOCAB, TinyLlavaForCausalLM
from .sam import TextPromptEncoder, tiny_sam

__all__ = [
    "BOS",
    "EOS",
    "FAMILIES",
    "IGNORE_INDEX",
    "IMAGE_TOKEN_INDEX",
    "PAD",
    "REJ",
    "SEG",
    "VOCAB",
    "TextPromptEncoder",
    "TinyGSVA",
    "TinyLISA",
    "TinyLlavaForCausalLM",
    "TinyREAD",
    "TinySESAME",
    "allow_only",
    "build_tiny",
    "make_batch",
    "make_eval_batch",
    "tiny_sam",
]
