"""The adapter contract: one ``SegPipelineSpec`` (data) + three hooks, reversible.

A <SEG> pipeline (LISA, GSVA, SESAME, READ, an HF-native model ...) is retrofitted with SasP
without touching its source: ``wrap(model, spec)`` attaches to the given model in place and
returns it; ``unwrap(model)`` removes everything; ``disabled(model)`` turns SasP off for a
``with`` block. Parameters, buffers, module names and ``state_dict`` keys never change: no
foreign module is replaced, only hooks are registered and entry-point methods are shadowed at
instance level (never on the class).

The three hooks
---------------
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
   tokens of its row's image, then ``sasp.similarity_as_points`` and ``sasp.to_sam_frame``;
   the points are queued on the context, one entry per [SEG].
3. **Prompt** (forward pre-hook with kwargs on ``spec.sam + ".prompt_encoder"``): pops as
   many entries as the call has prompts (``spec.prompt_count``, by default the length of
   ``text_embeds``) and injects ``points=(coords [n, K, 2] float32, labels [n, K] int64)``.
   A call that already carries points (a pipeline that computes its own) is left as it is.

Plugging in a new family
------------------------
Write a ``SegPipelineSpec``: the dotted paths (from the core model, i.e. below DDP's
``.module`` and PEFT's ``.base_model.model``) of SAM and of the projection, the attribute
names of the [SEG] (and optional [REJ]) token ids, the image placeholder id, and one
``ContextReader`` per entry point::

    def read_forward(core, args):          # args: the call's bound arguments, defaults applied
        sizes = [m.shape[-2:] for m in args["label_list"]]       # (H, W) per image
        return CallContext(tokens=args["input_ids"], image_hw=rows_from_offset(args["offset"], sizes))

    MY_SPEC = SegPipelineSpec(name="mine", entry_points={"model_forward": read_forward})
    model = wrap(model, MY_SPEC, cfg=SasPConfig(num_points=30), prompt="both")

Token layout: a row holds either one placeholder ``image_token_id`` that the model expands into
N_p patch embeddings (LLaVA-1.x style: later tokens move by N_p - 1), or N_p consecutive
``image_token_id`` tokens (already expanded, HF LLaVA style); see ``locate_seg_tokens``. N_p,
the token grid and CLIP's input resolution come from ``spec.num_patches``, ``spec.grid_hw``
and ``spec.clip_size`` (callables of the core model); the image-to-grid mapping is
``spec.geometry``. Override ``spec.prompt_count`` when the prompt encoder takes no
``text_embeds`` argument, and ``spec.computes_points`` to refuse models that already prompt
SAM with points of their own.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from sasp.config import Geometry, SasPConfig
from sasp.geometry import to_sam_frame
from sasp.ops import similarity_as_points
from sasp.similarity import similarity

PromptMode = Literal["both", "points", "text"]
_PROMPT_MODES = ("both", "points", "text")
_STATE = "_sasp_state"

__all__ = [
    "CallContext",
    "ContextReader",
    "SegPipelineSpec",
    "computes_own_points",
    "config_of",
    "disabled",
    "find_core",
    "is_wrapped",
    "locate_seg_tokens",
    "rows_from_offset",
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
    pending: List[Tuple[Tensor, Tensor]] = field(default_factory=list, repr=False)
    queued: bool = field(default=False, repr=False)

    def pop(self, n: int, k: int) -> Tuple[Tensor, Tensor]:
        """The next n queued entries: (coords [n, K, 2], labels [n, K])."""
        have = self.left()
        if n > have:
            raise RuntimeError(
                f"SAM's prompt encoder asks for {n} prompts but only {have} [SEG] point entries are queued; "
                "the spec's token layout does not match the pipeline's [SEG] gathering"
            )
        coords: List[Tensor] = [torch.zeros(0, k, 2)]
        labels: List[Tensor] = [torch.zeros(0, k, dtype=torch.long)]
        while n > 0:
            c, l = self.pending[0]
            take = min(n, c.shape[0])
            coords.append(c[:take])
            labels.append(l[:take])
            if take == c.shape[0]:
                self.pending.pop(0)
            else:
                self.pending[0] = (c[take:], l[take:])
            n -= take
        if len(coords) == 2:
            return coords[1], labels[1]
        return torch.cat([c.to(coords[-1].device) for c in coords]), torch.cat([l.to(labels[-1].device) for l in labels])

    def left(self) -> int:
        return sum(c.shape[0] for c, _ in self.pending)


ContextReader = Callable[[nn.Module, Mapping[str, Any]], Optional[CallContext]]
"""(core model, bound arguments of the entry-point call) -> CallContext, or None to skip."""


def _vision_tower(core: nn.Module) -> nn.Module:
    inner = core.get_model() if hasattr(core, "get_model") else core.model
    tower = inner.get_vision_tower() if hasattr(inner, "get_vision_tower") else inner.vision_tower
    return tower[0] if isinstance(tower, (list, tuple)) else tower


def vision_tower_num_patches(core: nn.Module) -> int:
    """N_p of a LLaVA-1.x vision tower (``CLIPVisionTower.num_patches``)."""
    return int(_vision_tower(core).num_patches)


def vision_tower_image_size(core: nn.Module) -> Optional[int]:
    """CLIP's input resolution (its centre-crop size) from a LLaVA-1.x vision tower's config."""
    size = getattr(getattr(_vision_tower(core), "config", None), "image_size", None)
    return int(size) if size is not None else None


def text_embeds_count(arguments: Mapping[str, Any]) -> int:
    """Prompts in a prompt-encoder call of the LISA fork: ``text_embeds.shape[0]``."""
    text = arguments.get("text_embeds")
    if text is None:
        raise RuntimeError(
            "the prompt encoder call has no text_embeds; give the spec a prompt_count that says "
            "how many prompts such a call holds"
        )
    return int(text.shape[0])


def _never(core: nn.Module) -> bool:
    return False


def computes_own_points(core: nn.Module) -> bool:
    """True for READ's own class (``READForCausalLM``), which prompts SAM with its own points."""
    kind = type(core)
    return any(hasattr(kind, m) for m in ("similarity_map_to_points", "similarity_as_points"))


@dataclass(frozen=True)
class SegPipelineSpec:
    """Where a <SEG> pipeline keeps what SasP needs. All paths are from the core model.

    Attributes:
        name: the family, for messages (``"lisa"``).
        entry_points: method name -> ``ContextReader``; these methods are shadowed at
            instance level to capture each call's tokens and image sizes.
        sequence_methods: methods whose return value (``.sequences`` or a tensor) fills the
            tokens of an active context that has none (``generate`` inside ``evaluate``).
        sam: dotted path of SAM (its ``prompt_encoder`` is hooked).
        projection: dotted path of the module whose first input is the last-layer hidden
            states [B, T, D].
        seg_token_attr / rej_token_attr: attributes of the core model holding the [SEG] /
            [REJ] token ids ([REJ] gets no points and no mask).
        image_token_id: the image placeholder id (LLaVA's IMAGE_TOKEN_INDEX = -200).
        seg_offset: the <SEG> feature is the hidden state this many positions before [SEG].
        num_patches / grid_hw / clip_size: callables of the core model giving N_p, the token
            grid (rows, cols) (None: square) and CLIP's input resolution (None: keep
            ``cfg.crop_size``).
        geometry: how the token grid covers the image (CLIP preprocessing): "center_crop" or
            "pad_square"; overrides ``cfg.geometry``.
        sam_long_side: SAM's ResizeLongestSide target; None reads it from the prompt encoder's
            ``input_image_size`` (1024 for every released SAM).
        prompt_count: bound arguments of a prompt-encoder call -> number of prompts in it.
        computes_points: True for models that already prompt SAM with points of their own
            (``wrap`` refuses them).
    """

    name: str
    entry_points: Mapping[str, ContextReader] = field(default_factory=dict)
    sequence_methods: Tuple[str, ...] = ("generate",)
    sam: str = "model.visual_model"
    projection: str = "model.text_hidden_fcs.0"
    seg_token_attr: str = "seg_token_idx"
    rej_token_attr: Optional[str] = None
    image_token_id: int = -200
    seg_offset: int = 1
    num_patches: Callable[[nn.Module], int] = vision_tower_num_patches
    grid_hw: Optional[Callable[[nn.Module], Optional[Tuple[int, int]]]] = None
    clip_size: Optional[Callable[[nn.Module], Optional[int]]] = vision_tower_image_size
    geometry: Geometry = "center_crop"
    sam_long_side: Optional[int] = None
    prompt_count: Callable[[Mapping[str, Any]], int] = text_embeds_count
    computes_points: Callable[[nn.Module], bool] = _never

    def replace(self, **changes: Any) -> "SegPipelineSpec":
        """A copy with some fields changed."""
        return replace(self, **changes)


# --------------------------------------------------------------------------- helpers


def rows_from_offset(offset: Any, sizes: Sequence[Any]) -> Tensor:
    """Per-row (H, W) [B, 2] from per-image sizes and LISA's ``offset`` (rows of image i are
    ``offset[i]:offset[i+1]``)."""
    hw = torch.tensor([[int(s[-2]), int(s[-1])] for s in sizes], dtype=torch.long).view(-1, 2)
    off = torch.as_tensor(offset).detach().to("cpu", torch.long).view(-1)
    if off.numel() != hw.shape[0] + 1:
        raise ValueError(f"offset has {off.numel()} entries for {hw.shape[0]} images; expected {hw.shape[0] + 1}")
    counts = off.diff()
    if (counts < 0).any():
        raise ValueError(f"offset must be non-decreasing, got {off.tolist()}")
    return hw.repeat_interleave(counts, dim=0)


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


def _get(root: nn.Module, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() and isinstance(obj, (nn.ModuleList, nn.Sequential)) else getattr(obj, part)
    return obj


def locate_seg_tokens(
    tokens: Tensor, seg_id: int, image_id: int, num_patches: int, seg_offset: int = 1
) -> Tuple[Tensor, Tensor, Tensor]:
    """Hidden-state positions of the <SEG> features and of each row's image patches.

    A row holds one placeholder ``image_id`` (expanded by the model into N_p patches, so a
    token j after it sits at j + N_p - 1) or N_p consecutive ``image_id`` tokens (already
    expanded). The <SEG> feature of a [SEG] at token j is the hidden state of token
    j - seg_offset (the last patch when that token is the placeholder).

    Args:
        tokens (Tensor): [B, L] token ids.

    Returns:
        rows (Tensor): [M] row of each [SEG], row-major order (CPU int64).
        seg_pos (Tensor): [M] hidden-state position of each <SEG> feature.
        patch_start (Tensor): [B] hidden-state position of each row's first patch (-1: none).
    """
    tok = tokens.detach()
    is_img = tok == image_id
    count = is_img.sum(1).cpu()
    first = is_img.to(torch.int8).argmax(1).cpu()
    placeholder = count == 1
    expanded = count == num_patches
    bad = (count > 0) & ~placeholder & ~expanded
    if bad.any():
        r = int(bad.nonzero()[0])
        raise ValueError(
            f"row {r} holds {int(count[r])} image tokens ({image_id}); expected one placeholder or "
            f"N_p={num_patches} expanded tokens (one image per row)"
        )
    shift = torch.where(placeholder, torch.tensor(num_patches - 1), torch.tensor(0))
    rows, cols = (tok == seg_id).nonzero(as_tuple=True)
    rows, cols = rows.cpu(), cols.cpu()
    keep = cols >= seg_offset
    rows, cols = rows[keep], cols[keep]
    no_image = count[rows] == 0
    if no_image.any():
        r = int(rows[no_image][0])
        raise ValueError(f"row {r} has a [SEG] token but no image token ({image_id})")
    q = cols - seg_offset
    seg_pos = torch.where(q >= first[rows], q + shift[rows], q)
    patch_start = torch.where(count > 0, first, torch.tensor(-1))
    return rows, seg_pos, patch_start


# --------------------------------------------------------------------------- state + hooks


class _State:
    """Everything one wrap attached; stored on the core model as a plain attribute.

    Hooks and method shadows are objects that hold this state (no closures), so that
    ``copy.deepcopy`` and pickling of a wrapped model give a copy wired to its own modules.
    """

    def __init__(self, core: nn.Module, spec: SegPipelineSpec, cfg: SasPConfig, prompt: PromptMode):
        self.core, self.spec, self.cfg, self.prompt = core, spec, cfg, prompt
        self.hooks: List[Tuple[nn.Module, int]] = []  # (module, forward-pre-hook id)
        self.shadowed: Dict[str, Tuple[bool, Any]] = {}  # method -> (had an instance attribute, its value)
        self.contexts: List[CallContext] = []
        self.off = 0
        self.sam = _get(core, spec.sam)
        self.seg_id = int(getattr(core, spec.seg_token_attr))
        self.num_patches = int(spec.num_patches(core))
        self.grid_hw = spec.grid_hw(core) if spec.grid_hw is not None else None
        if spec.sam_long_side is not None:
            self.long_side = int(spec.sam_long_side)
        else:
            self.long_side = int(max(self.sam.prompt_encoder.input_image_size))

    @property
    def active(self) -> bool:
        return self.off == 0 and self.prompt != "text"

    def current(self) -> Optional[CallContext]:
        return self.contexts[-1] if self.contexts else None

    def method(self, name: str) -> Callable:
        """The shadowed method as it was before wrapping, bound to the core model."""
        had, previous = self.shadowed[name]
        if had:
            return previous
        return getattr(type(self.core), name).__get__(self.core, type(self.core))


class _Shadow:
    """Instance-level stand-in for a method of the core model (keeps its name and signature)."""

    def __init__(self, state: _State, name: str):
        self.state, self.name = state, name
        functools.update_wrapper(self, state.method(name))


class _Entry(_Shadow):
    """Hook 1: an entry point pushes the call's ``CallContext`` for the other two hooks."""

    def __init__(self, state: _State, name: str, reader: ContextReader):
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


class _Sequences(_Shadow):
    """``generate``: its ``sequences`` become the tokens of an active context that has none."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.state.method(self.name)(*args, **kwargs)
        ctx = self.state.current()
        if ctx is not None and ctx.tokens is None:
            ctx.tokens = out.sequences if hasattr(out, "sequences") else out
        return out


class _HiddenHook:
    """Hook 2 (forward pre-hook on the projection): SasP points for every [SEG], queued."""

    def __init__(self, state: _State):
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
        refined, labels, _ = similarity_as_points(torch.cat(sims), hw, state.cfg, state.grid_hw)
        ctx.pending.append((to_sam_frame(refined, hw, state.long_side), labels))
        return None


class _PromptHook:
    """Hook 3 (forward pre-hook with kwargs on SAM's prompt encoder): inject the points."""

    def __init__(self, state: _State):
        self.state = state

    def __call__(self, module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[Tuple, Dict]]:
        state = self.state
        ctx = state.current()
        if not state.active or ctx is None or not ctx.queued:
            return None
        sig = inspect.signature(module.forward)
        arguments = dict(sig.bind(*args, **kwargs).arguments)
        n = state.spec.prompt_count(arguments)
        coords, labels = ctx.pop(n, state.cfg.num_points)
        if arguments.get("points") is not None:
            return None  # the pipeline prompts with points of its own: never add them twice
        dev = module.point_embeddings[0].weight.device
        arguments["points"] = (coords.to(dev), labels.to(dev))
        for p in ("boxes", "masks"):
            arguments.setdefault(p, None)
        if state.prompt == "points" and "text_embeds" in sig.parameters:
            arguments["text_embeds"] = None
        return (), arguments


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
    state = _State(core, spec, cfg, prompt)
    try:
        for name, reader in spec.entry_points.items():
            _shadow(state, name)
            object.__setattr__(core, name, _Entry(state, name, reader))
        for name in spec.sequence_methods:
            if callable(getattr(core, name, None)):
                _shadow(state, name)
                object.__setattr__(core, name, _Sequences(state, name))
        projection = _get(core, spec.projection)
        state.hooks.append((projection, projection.register_forward_pre_hook(_HiddenHook(state)).id))
        encoder = state.sam.prompt_encoder
        state.hooks.append((encoder, encoder.register_forward_pre_hook(_PromptHook(state), with_kwargs=True).id))
    except Exception:
        _detach(core, state)
        raise
    object.__setattr__(core, _STATE, state)
    return model


def _shadow(state: _State, name: str) -> None:
    core = state.core
    if name in state.shadowed:
        raise ValueError(f"spec {state.spec.name!r} names {name}() twice")
    if not callable(getattr(core, name, None)):
        raise ValueError(f"{type(core).__name__} has no method {name}() (spec {state.spec.name!r})")
    state.shadowed[name] = (name in core.__dict__, core.__dict__.get(name))


def _detach(core: nn.Module, state: _State) -> None:
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
