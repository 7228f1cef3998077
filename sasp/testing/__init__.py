"""Tiny LISA-family models to test SasP adapter specs against (like ``torch.testing``).

Written for sasp, they reproduce the forward structure of each family where a spec looks, on
top of transformers' Llama/CLIP classes and segment_anything's SAM classes, with random
weights (a pass takes milliseconds on a CPU)::

    from sasp.testing import SEG, build_tiny, make_batch
    model = sasp.wrap_lisa(build_tiny("lisa"))
    out = model(**make_batch("lisa", [(48, 40)], [[[7, SEG]]]))

Modules (this package exports what each lists in ``__all__``):
    sam: ``TextPromptEncoder`` (the LISA fork of SAM's prompt encoder) and ``tiny_sam``.
    llava: ``TinyLlavaForCausalLM`` (LLaVA-1.x as the family vendors it), the token ids.
    families: ``TinyLISA``, ``TinyGSVA``, ``TinySESAME``, ``TinyREAD``, ``build_tiny``.
    batches: ``make_batch`` / ``make_eval_batch``, the families' call arguments.
    sam_hf: the same on transformers' SAM / SAM 2 (imported on its own).

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

from . import batches, families, llava, sam
from .batches import *  # noqa: F401,F403
from .families import *  # noqa: F401,F403
from .llava import *  # noqa: F401,F403
from .sam import *  # noqa: F401,F403

__all__: list = []
__all__ += batches.__all__
__all__ += families.__all__
__all__ += llava.__all__
__all__ += sam.__all__
