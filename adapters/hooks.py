"""The three hooks that ``sasp.adapters.wrap`` attaches, and the state they share.

Hooks and method shadows are objects that hold the state (no closures), so that
``copy.deepcopy`` and pickling of a wrapped model give a copy wired to its own modules. Users
do not build these directly: ``wrap`` does, and ``unwrap`` removes them (base.py).
"""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from sasp.config import SasPConfig
from sasp.ops import similarity_as_points, similarity_mask_prompt
from sasp.similarity import similarity

from .llava1 import locate_seg_tokens
from .sam_prompts import prompt_style

if TYPE_CHECKING:
    from .base import CallContext, ContextReader, SegPipelineSpec

PromptMode = Literal["both", "points", "text"]


class Queued(NamedTuple):
    """SasP's prompts of some [SEG]s, in SAM's frame (a field is None when not used)."""

    coords: Optional[Tensor]  # [n, K, 2] float32
    labels: Optional[Tensor]  # [n, K] int64
    mask: Optional[Tensor]  # [n, 1, m, m] float32

    @property
    def count(self) -> int:
        return next(t.shape[0] for t in self if t is not None)

    def rows(self, start: int, stop: int) -> "Queued":
        return Queued(*(None if t is None else t[start:stop] for t in self))



def get_path(root: nn.Module, path: str) -> Any:
    """The attribute at a dotted ``path`` below ``root`` (digits index ModuleLists)."""
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() and isinstance(obj, (nn.ModuleList, nn.Sequential)) else getattr(obj, part)
    return obj


class WrapState:
    """Everything one wrap attached; stored on the core model as a plain attribute."""

    def __init__(self, core: nn.Module, spec: "SegPipelineSpec", cfg: SasPConfig, prompt: PromptMode):
        self.core, self.spec, self.cfg, self.prompt = core, spec, cfg, prompt
        self.hooks: List[Tuple[nn.Module, int]] = []  # (module, forward-pre-hook id)
        self.shadowed: Dict[str, Tuple[bool, Any]] = {}  # method -> (had an instance attribute, its value)
        self.contexts: List["CallContext"] = []
        self.off = 0
        self.sam = get_path(core, spec.sam)
        self.seg_id = int(getattr(core, spec.seg_token_attr))
        self.num_patches = int(spec.num_patches(core))
        self.grid_hw = spec.grid_hw(core) if spec.grid_hw is not None else None
        # the sam2 package's SAM2Base names it sam_prompt_encoder
        encoder = self.encoder = self.sam.prompt_encoder if hasattr(self.sam, "prompt_encoder") else self.sam.sam_prompt_encoder
        self.style = prompt_style(spec.sam_backend, encoder)
        if spec.sam_long_side is not None:
            self.long_side = int(spec.sam_long_side)
        else:
            self.long_side = self.style.input_size(encoder)
        self.mask_size = self.style.mask_size(encoder) if cfg.uses_mask else None
        self.num_points = cfg.num_points if cfg.uses_points else None

    @property
    def active(self) -> bool:
        return self.off == 0 and self.prompt != "text"

    def current(self) -> Optional["CallContext"]:
        return self.contexts[-1] if self.contexts else None

    def method(self, name: str) -> Callable:
        """The shadowed method as it was before wrapping, bound to the core model."""
        had, previous = self.shadowed[name]
        if had:
            return previous
        return getattr(type(self.core), name).__get__(self.core, type(self.core))


class _Shadow:
    """Instance-level stand-in for a method of the core model (keeps its name and signature)."""

    def __init__(self, state: WrapState, name: str):
        self.state, self.name = state, name
        functools.update_wrapper(self, state.method(name))


class EntryShadow(_Shadow):
    """Hook 1: an entry point pushes the call's ``CallContext`` for the other two hooks."""

    def __init__(self, state: WrapState, name: str, reader: "ContextReader"):
        super().__init__(state, name)
        self.reader = reader
        self.signature = inspect.signature(state.method(name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        state = self.state
        orig = state.method(self.name)
        if not state.active:
            return orig(*args, **kwargs)
        sig = self.signature
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for p in sig.parameters.values():  # fold **kwargs into the mapping
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(p.name, {}) or {})
        ctx = self.reader(state.core, arguments)
        if ctx is None:
            return orig(*args, **kwargs)
        state.contexts.append(ctx)
        try:
            out = orig(*args, **kwargs)
        finally:
            state.contexts.pop()
        if ctx.left():
            warnings.warn(
                f"sasp ({state.spec.name}): {ctx.left()} [SEG] point entries of {self.name}() were not consumed "
                "by SAM's prompt encoder; the spec may not match this pipeline",
                RuntimeWarning,
                stacklevel=2,
            )
        return out


class SequencesShadow(_Shadow):
    """``generate``: its ``sequences`` become the tokens of an active context that has none."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.state.method(self.name)(*args, **kwargs)
        ctx = self.state.current()
        if ctx is not None and ctx.tokens is None:
            ctx.tokens = out.sequences if hasattr(out, "sequences") else out
        return out


class HiddenStatesHook:
    """Hook 2 (forward pre-hook on the projection): SasP points for every [SEG], queued."""

    def __init__(self, state: WrapState):
        self.state = state

    def __call__(self, module: nn.Module, args: Tuple[Any, ...]) -> None:
        state = self.state
        spec, ctx = state.spec, state.current()
        if not state.active or ctx is None or ctx.tokens is None or not args:
            return None
        h = args[0]
        if not isinstance(h, Tensor) or h.dim() != 3:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"sasp ({spec.name}): the projection's input must be hidden states [B, T, D], got {shape}")
        tokens = ctx.tokens
        if tokens.shape[0] != h.shape[0]:
            raise ValueError(f"sasp ({spec.name}): {tokens.shape[0]} token rows for {h.shape[0]} hidden-state rows")
        rows, seg_pos, start = locate_seg_tokens(tokens, state.seg_id, spec.image_token_id, state.num_patches, spec.seg_offset)
        ctx.queued = True
        n_p, t = state.num_patches, h.shape[1]
        over = (seg_pos >= t) | (start[rows] + n_p > t)
        if over.any():
            r = int(rows[over][0])
            raise ValueError(f"sasp ({spec.name}): row {r}: a [SEG] or its image lies beyond the {t} hidden states")
        if ctx.image_hw.shape[0] != h.shape[0]:
            raise ValueError(f"sasp ({spec.name}): {ctx.image_hw.shape[0]} image sizes for {h.shape[0]} rows")
        if rows.numel() == 0:
            return None
        hw = ctx.image_hw[rows]
        sims, tokens_of = [], {}
        for r, p in zip(rows.tolist(), seg_pos.tolist()):
            if r not in tokens_of:  # the row's patches: a view (float32 models) or one cast per row
                k = int(start[r])
                tokens_of[r] = h[r, k : k + n_p].float()
            # one <SEG> at a time: [N_p, D] x [1, D] stays a matrix-vector product on a view,
            # where a batched gather would copy N_p x D per <SEG>
            sims.append(similarity(tokens_of[r], h[r, p : p + 1]))
        sim, cfg, coords, labels, mask = torch.cat(sims), state.cfg, None, None, None
        if cfg.uses_points:
            refined, labels, _ = similarity_as_points(sim, hw, cfg, state.grid_hw)
            coords = state.style.to_frame(refined, hw, state.long_side)
        if cfg.uses_mask:
            mask = similarity_mask_prompt(sim, hw, cfg, state.grid_hw, state.long_side, state.mask_size, state.style.frame)
        ctx.pending.append(Queued(coords, labels, mask))
        return None


class PromptHook:
    """Hook 3 (forward pre-hook with kwargs on SAM's prompt encoder): inject the points and
    the mask prompt in the encoder's conventions (``spec.sam_backend``)."""

    def __init__(self, state: WrapState):
        self.state = state

    def __call__(self, module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[Tuple, Dict]]:
        state = self.state
        ctx = state.current()
        if not state.active or ctx is None or not ctx.queued:
            return None
        sig = inspect.signature(module.forward)
        arguments = dict(sig.bind(*args, **kwargs).arguments)
        n = state.spec.prompt_count(arguments)
        coords, labels, mask = ctx.pop(n, state.num_points, state.mask_size)
        style = state.style
        if style.has_points(arguments):
            return None  # the pipeline prompts with points of its own: never add them twice
        weight = next(module.parameters())
        arguments = style.inject(arguments, coords, labels, mask, weight.device, weight.dtype)
        if state.prompt == "points" and "text_embeds" in sig.parameters:
            arguments["text_embeds"] = None
        return (), arguments
