"""Adapters that retrofit <SEG>-token segmentation models with SasP (installed as sasp.adapters).

``model = wrap_lisa(model)`` (or ``wrap_gsva``, ``wrap_sesame``, ``wrap(model, spec)``) attaches
SasP in place; ``unwrap(model)`` removes it; ``with disabled(model):`` turns it off for a block.
Importing this package imports torch, numpy and sasp's core only; the wrapped models bring
their own transformers / segment_anything.

Modules: ``base`` (the contract: ``SegPipelineSpec``, ``CallContext``, ``wrap`` ...), ``hooks``
(the three hooks it attaches), ``llava1`` (LLaVA-1.x conventions the specs share: N_p, CLIP
size, the [SEG] / image token layout) and one spec per family (``lisa``, ``gsva``, ``sesame``).
Tiny LISA-family models to test a spec against live in ``sasp.testing``.
"""
from .base import CallContext, SegPipelineSpec, config_of, disabled, is_wrapped, unwrap, wrap
from .gsva import GSVA_SPEC, wrap_gsva
from .lisa import LISA_SPEC, wrap_lisa
from .sesame import SESAME_SPEC, wrap_sesame

__all__ = [
    "GSVA_SPEC",
    "LISA_SPEC",
    "SESAME_SPEC",
    "CallContext",
    "SegPipelineSpec",
    "config_of",
    "disabled",
    "is_wrapped",
    "unwrap",
    "wrap",
    "wrap_gsva",
    "wrap_lisa",
    "wrap_sesame",
]
