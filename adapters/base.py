"""The adapter contract: one ``SegPipelineSpec`` (data) + three hooks, reversible.

A <SEG> pipeline (LISA, GSVA, SESAME, READ, or one of your own) is retrofitted with SasP
without touching its source: ``wrap(model, spec)`` attaches to the given model in place and
returns it; ``unwrap(model)`` removes everything; ``disabled(model)`` turns SasP off for a
``with`` block. Parameters, buffers, module names and ``state_dict`` keys never change: no
foreign module is replaced, only hooks are registered and entry-point methods are shadowed at
instance level (never on the class).

The three hooks (hooks.py)
--------------------------
1. **Context** (instance-level wrappers of ``spec.entry_points``, e.g. ``model_forward``,
   ``evaluate``): each call reads, from its bound arguments, the token ids whose rows line up
   with the hidden-state rows and the original image size (H, W) of every row, and pushes a
   ``CallContext``. The token tensor is kept *by reference* and read when the hidden states
   arrive, so a pipeline that rewrites ``input_ids`` in place (GSVA's ``reeval``) is seen as it
   is then. Methods in ``spec.sequence_methods`` (``generate``) fill ``tokens`` of a context
   that has none with the ``sequences`` they return.
2. **Hidden states** (forward pre-hook on ``spec.projection``, whose input is the full
   last-layer hidden states ``[B, T, D]`` in every pipeline): for every [SEG] (row-major) the
   similarity of the hidden state ``spec.seg_offset`` positions before it with the N_p patch
   tokens of its row's image, then ``sasp.similarity_as_points`` (points in SAM's frame) and,
   with ``cfg.spatial_prompt`` "mask" or "points+mask", ``sasp.similarity_mask_prompt`` (the
   map as SAM's dense mask prompt); queued on the context, one entry per [SEG]. Only [SEG]
   tokens get prompts: a [REJ] (GSVA) gets none, as it gets no SAM call.
3. **Prompt** (forward pre-hook with kwargs on ``spec.sam + ".prompt_encoder"``): pops as
   many entries as the call has prompts (``spec.prompt_count``, by default the length of
   ``text_embeds``) and injects them in the conventions of ``spec.sam_backend``
   (``sam_prompts``): segment_anything's ``points=(coords [n, K, 2] float32, labels [n, K]
   int64)`` and ``masks=[n, 1, m, m]``, or transformers' ``input_points`` / ``input_labels`` /
   ``input_masks``. A call that already carries points (a pipeline that computes its own) is
   left as it is.

Plugging in a new family
------------------------
Write a ``SegPipelineSpec``: the dotted paths (from the core model, i.e. below DDP's
``.module`` and PEFT's ``.base_model.model``) of SAM and of the projection, the attribute
name of the [SEG] token id, the image placeholder id, and one ``ContextReader`` per entry
point::

    from sasp.adapters.llava1 import rows_from_offset

    def read_forward(core, args):          # args: the call's bound arguments, defaults applied
        sizes = [m.shape[-2:] for m in args["label_list"]]       # (H, W) per image
        return CallContext(tokens=args["input_ids"], image_hw=rows_from_offset(args["offset"], sizes))

    MY_SPEC = SegPipelineSpec(name="mine", entry_points={"model_forward": read_forward})
    model = wrap(model, MY_SPEC, cfg=SasPConfig(num_points=30), prompt="both")

The defaults describe LLaVA-1.x as the LISA family vendors it (llava1.py): one placeholder
``image_token_id`` per row that the model expands into N_p patch embeddings (later tokens move
by N_p - 1), or N_p consecutive ``image_token_id`` tokens (already expanded); see
``llava1.locate_seg_tokens``. N_p, the token grid and CLIP's input resolution come from
``spec.num_patches``, ``spec.grid_hw`` and ``spec.clip_size`` (callables of the core model);
the image-to-grid mapping is ``spec.geometry``. Override ``spec.prompt_count`` when the prompt
encoder takes no ``text_embeds`` argument, and ``spec.computes_points`` to refuse models that
already prompt SAM with points of their own. ``sasp.testing`` has tiny LISA-family models to
test a spec against.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from sasp.config import Geometry, SasPConfig

from .hooks import EntryShadow, HiddenStatesHook, PromptHook, PromptMode, Queued, SequencesShadow, WrapState, get_path
from .llava1 import text_embeds_count, vision_tower_image_size, vision_tower_num_patches
from .sam_prompts import SamPromptStyle

_PROMPT_MODES = ("both", "points", "text")
_STATE = "_sasp_state"

__all__ = [
    "CallContext",
    "ContextReader",
    "PromptMode",
    "SegPipelineSpec",
    "config_of",
    "disabled",
    "find_core",
    "is_wrapped",
    "unwrap",
    "wrap",
]


@dataclass
class CallContext:
    """What one entry-point call tells the hooks.

    Attributes:
        tokens (Tensor | None): [B, L] token ids whose rows are the rows of the hidden states
            the projection will see (kept by reference); None until a sequence method
            (``generate``) returns them.
        image_hw (Tensor): [B, 2] original (H, W) of each row's image.
    """

    tokens: Optional[Tensor]
    image_hw: Tensor
    pending: List[Queued] = field(default_factory=list, repr=False)
    queued: bool = field(default=False, repr=False)

    def pop(self, n: int, k: Optional[int], mask_size: Optional[int] = None) -> Queued:
        """The next n queued entries: coords [n, K, 2] and labels [n, K] (None when ``k`` is
        None: no points), mask prompts [n, 1, m, m] (None when ``mask_size`` is None)."""
        have = self.left()
        if n > have:
            raise RuntimeError(
                f"SAM's prompt encoder asks for {n} prompts but only {have} [SEG] point entries are queued; "
                "the spec's token layout does not match the pipeline's [SEG] gathering"
            )
        empty = Queued(
            None if k is None else torch.zeros(0, k, 2),
            None if k is None else torch.zeros(0, k, dtype=torch.long),
            None if mask_size is None else torch.zeros(0, 1, mask_size, mask_size),
        )
        parts: List[Queued] = [empty]
        while n > 0:
            entry = self.pending[0]
            take = min(n, entry.count)
            parts.append(entry.rows(0, take))
            if take == entry.count:
                self.pending.pop(0)
            else:
                self.pending[0] = entry.rows(take, entry.count)
            n -= take
        if len(parts) == 2:
            return parts[1]
        return Queued(*(None if t[0] is None else torch.cat([x.to(t[-1].device) for x in t]) for t in zip(*parts)))

    def left(self) -> int:
        return sum(e.count for e in self.pending)


ContextReader = Callable[[nn.Module, Mapping[str, Any]], Optional[CallContext]]
"""(core model, bound arguments of the entry-point call) -> CallContext, or None to skip."""


def _never(core: nn.Module) -> bool:
    return False


@dataclass(frozen=True)
class SegPipelineSpec:
    """Where a <SEG> pipeline keeps what SasP needs. All paths are from the core model.

    Attributes:
        name: the family, for messages (``"lisa"``).
        entry_points: method name -> ``ContextReader``; these methods are shadowed at
            instance level to capture each call's tokens and image sizes.
        sequence_methods: methods whose return value (``.sequences`` or a tensor) fills the
            tokens of an active context that has none (``generate`` inside ``evaluate``).
        sam: dotted path of SAM (its ``prompt_encoder``, or ``sam_prompt_encoder`` in the sam2
            package's ``SAM2Base``, is hooked).
        projection: dotted path of the module whose first input is the last-layer hidden
            states [B, T, D].
        seg_token_attr: attribute of the core model holding the [SEG] token id. Other
            special tokens ([REJ]) need no entry: only [SEG] tokens get points.
        image_token_id: the image placeholder id (LLaVA's IMAGE_TOKEN_INDEX = -200).
        seg_offset: the <SEG> feature is the hidden state this many positions before [SEG].
        num_patches / grid_hw / clip_size: callables of the core model giving N_p, the token
            grid (rows, cols) (None: square) and CLIP's input resolution (None: keep
            ``cfg.crop_size``); by default read from the LLaVA-1.x vision tower.
        geometry: how the token grid covers the image (CLIP preprocessing): "center_crop" or
            "pad_square"; overrides ``cfg.geometry``.
        sam_long_side: SAM's input side (ResizeLongestSide target); None reads it from the
            prompt encoder's ``input_image_size`` (1024 for every released SAM).
        sam_backend: the prompt encoder's conventions (keywords, shapes, coordinate frame):
            "segment_anything" (LISA's fork and the stock encoder), "transformers"
            (``SamModel``), "sam2" (``Sam2Model`` or the sam2 package), or a
            ``sam_prompts.SamPromptStyle``.
        prompt_count: bound arguments of a prompt-encoder call -> number of prompts in it (by
            default the length of the LISA fork's ``text_embeds``).
        computes_points: True for models that already prompt SAM with points of their own
            (``wrap`` refuses them).
    """

    name: str
    entry_points: Mapping[str, ContextReader] = field(default_factory=dict)
    sequence_methods: Tuple[str, ...] = ("generate",)
    sam: str = "model.visual_model"
    projection: str = "model.text_hidden_fcs.0"
    seg_token_attr: str = "seg_token_idx"
    image_token_id: int = -200
    seg_offset: int = 1
    num_patches: Callable[[nn.Module], int] = vision_tower_num_patches
    grid_hw: Optional[Callable[[nn.Module], Optional[Tuple[int, int]]]] = None
    clip_size: Optional[Callable[[nn.Module], Optional[int]]] = vision_tower_image_size
    geometry: Geometry = "center_crop"
    sam_long_side: Optional[int] = None
    sam_backend: Union[str, SamPromptStyle] = "segment_anything"
    prompt_count: Callable[[Mapping[str, Any]], int] = text_embeds_count
    computes_points: Callable[[nn.Module], bool] = _never

    def replace(self, **changes: Any) -> "SegPipelineSpec":
        """A copy with some fields changed."""
        return replace(self, **changes)


def find_core(model: nn.Module) -> nn.Module:
    """The model below DDP/DeepSpeed/FSDP's ``.module`` and PEFT's ``.base_model.model``."""
    for _ in range(16):
        if _STATE in model.__dict__:  # not hasattr: PEFT forwards attribute lookups to the model
            return model
        names = {c.__name__ for c in type(model).__mro__}
        subs = model._modules
        if names & {"DistributedDataParallel", "DataParallel", "DeepSpeedEngine", "FullyShardedDataParallel"} and "module" in subs:
            model = subs["module"]
        elif any(c.__module__.startswith("peft.") for c in type(model).__mro__) and ("base_model" in subs or "model" in subs):
            model = subs["base_model"] if "base_model" in subs else subs["model"]  # PeftModel, then its tuner
        else:
            return model
    return model


# --------------------------------------------------------------------------- public API


def is_wrapped(model: nn.Module) -> bool:
    """Whether ``model`` (or the core model below DDP/PEFT) carries SasP hooks."""
    return _STATE in find_core(model).__dict__


def config_of(model: nn.Module) -> SasPConfig:
    """The effective SasPConfig of a wrapped model (geometry and crop size from its spec)."""
    state = find_core(model).__dict__.get(_STATE)
    if state is None:
        raise ValueError("the model is not wrapped with SasP")
    return state.cfg


def wrap(
    model: nn.Module,
    spec: SegPipelineSpec,
    cfg: Optional[SasPConfig] = None,
    prompt: PromptMode = "both",
) -> nn.Module:
    """Attach SasP to ``model`` in place and return it.

    Args:
        model: the pipeline's model, bare or inside DDP/DeepSpeed (``.module``) or PEFT
            (``.base_model.model``).
        spec: where the pipeline keeps SAM, the projection, the token ids and the sizes.
        cfg: SasP settings (READ-7B's by default). ``geometry`` comes from the spec and
            ``crop_size`` from the vision tower's input resolution when the spec reads it.
        prompt: prompt SAM with the SasP points and the <SEG> text embedding ("both"), the
            points only ("points") or the text embedding only ("text": as if unwrapped).

    Returns:
        The same ``model`` object.

    Raises:
        ValueError: the model is wrapped already with other settings (wrapping again with the
            same spec, cfg and prompt is a no-op), or it computes points itself (READ's class).
    """
    if prompt not in _PROMPT_MODES:
        raise ValueError(f"prompt must be one of {_PROMPT_MODES}, got {prompt!r}")
    core = find_core(model)
    cfg = (cfg or SasPConfig()).replace(geometry=spec.geometry)
    crop = spec.clip_size(core) if spec.clip_size is not None else None
    if crop is not None:
        cfg = cfg.replace(crop_size=int(crop))
    old = core.__dict__.get(_STATE)
    if old is not None:
        if old.spec == spec and old.cfg == cfg and old.prompt == prompt:
            return model
        raise ValueError(
            f"the model is already wrapped with SasP ({old.spec.name}, prompt={old.prompt!r}); "
            "call sasp.unwrap(model) before wrapping it again with other settings"
        )
    if spec.computes_points(core):
        raise ValueError(
            f"{type(core).__name__} already prompts SAM with similarity points of its own; wrapping it "
            "would add points twice. Load the checkpoint into the SESAME class and wrap that instead."
        )
    state = WrapState(core, spec, cfg, prompt)
    try:
        for name, reader in spec.entry_points.items():
            _shadow(state, name)
            object.__setattr__(core, name, EntryShadow(state, name, reader))
        for name in spec.sequence_methods:
            if callable(getattr(core, name, None)):
                _shadow(state, name)
                object.__setattr__(core, name, SequencesShadow(state, name))
        projection = get_path(core, spec.projection)
        state.hooks.append((projection, projection.register_forward_pre_hook(HiddenStatesHook(state)).id))
        encoder = state.encoder
        state.hooks.append((encoder, encoder.register_forward_pre_hook(PromptHook(state), with_kwargs=True).id))
    except Exception:
        _detach(core, state)
        raise
    object.__setattr__(core, _STATE, state)
    return model


def _shadow(state: WrapState, name: str) -> None:
    core = state.core
    if name in state.shadowed:
        raise ValueError(f"spec {state.spec.name!r} names {name}() twice")
    if not callable(getattr(core, name, None)):
        raise ValueError(f"{type(core).__name__} has no method {name}() (spec {state.spec.name!r})")
    state.shadowed[name] = (name in core.__dict__, core.__dict__.get(name))


def _detach(core: nn.Module, state: WrapState) -> None:
    for module, hook_id in state.hooks:  # by id: a RemovableHandle would outlive deepcopy wrong
        module._forward_pre_hooks.pop(hook_id, None)
        module._forward_pre_hooks_with_kwargs.pop(hook_id, None)
    state.hooks.clear()
    for name, (had, previous) in state.shadowed.items():
        if had:
            object.__setattr__(core, name, previous)
        else:
            core.__dict__.pop(name, None)
    state.shadowed.clear()
    state.contexts.clear()


def unwrap(model: nn.Module) -> nn.Module:
    """Remove every SasP hook and method shadow from ``model`` (in place); returns it.

    The model then behaves bit-identically to one never wrapped. A model that is not wrapped
    is returned unchanged.
    """
    core = find_core(model)
    state = core.__dict__.pop(_STATE, None)
    if state is not None:
        _detach(core, state)
    return model


@contextlib.contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Turn SasP off inside a ``with`` block (nests; a no-op for models not wrapped)::

        with sasp.disabled(model):
            out = model(**batch)        # SAM sees the text embedding only, as before wrapping
    """
    state = find_core(model).__dict__.get(_STATE)
    if state is None:
        yield model
        return
    state.off += 1
    try:
        yield model
    finally:
        state.off -= 1
