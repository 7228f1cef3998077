"""``sasp demo``: one image and one prompt through a <SEG> model with SasP, drawn as one PNG.

The picture shows what the model used: the [SEG] similarity heat-map (with its colour bar),
the points and labels SAM received (none when SAM was prompted with the [SEG] embedding only)
and the mask, titled with the prompt.

By default (``model="tiny"``) it runs the trained tiny model that ships with sasp
(``sasp.models.seg_llava.load_pretrained_tiny``) on a held-out scene of the synthetic task
(``DEMO_SPLIT`` sample ``DEMO_INDEX``, asked ``DEFAULT_PROMPT``, its own instruction); the
model generates its answer. Without the shipped files it falls back to the random tiny model
(a note says so; the answer is then fixed, the picture shows the pipeline only).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import numpy as np

DEMO_SPLIT = "test"
DEMO_INDEX = 173
"""The default scene: sample ``DEMO_INDEX`` of the synthetic ``DEMO_SPLIT`` set (held out from
training; the shipped model's mask there has IoU >= 0.5 with the target)."""
DEFAULT_PROMPT = "Where are all the red shapes? Please output segmentation mask."
"""The default scene's instruction (``demo_sample().instruction``)."""
TINY_ANSWER = "Sure, [SEG]."
DEFAULT_OUT = "sasp_demo.png"
PRESET_GRID_SIDE = 24
"""Token grid side the SasP presets were tuned on (READ: CLIP ViT-L/14 at 336 px)."""
TITLE_CHARS = 80
"""Longer prompts are shortened in the picture's titles."""
TITLE_CHAR_PX = 7
"""Width of one title character at the titles' font size (9 pt at 100 dpi), with a margin."""


class UserError(Exception):
    """Bad input: the CLI prints it as one line and exits with code 2."""


def synthetic_image(height: int = 240, width: int = 320) -> np.ndarray:
    """The built-in test picture: a red circle and a green square on a dark blue gradient."""
    yy, xx = np.mgrid[:height, :width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 2] = (40 + 80 * yy / max(height - 1, 1)).astype(np.uint8)
    img[..., 1] = 20
    circle = (xx - 0.62 * width) ** 2 + (yy - 0.5 * height) ** 2 < (0.18 * min(height, width) * 1.3) ** 2
    img[circle] = (220, 40, 40)
    square = (abs(xx - 0.2 * width) < 0.09 * width) & (abs(yy - 0.3 * height) < 0.09 * width)
    img[square] = (40, 200, 60)
    return img


def demo_sample():
    """The default scene: a ``Sample`` of the synthetic task (image array, instruction, target)."""
    from .data.synthetic import SyntheticReasonSeg

    return SyntheticReasonSeg(DEMO_SPLIT, size=DEMO_INDEX + 1)[DEMO_INDEX]


def grid_adapted(cfg, grid_hw: Tuple[int, int]):
    """``cfg`` with ``down_sample`` scaled to a token grid smaller than the presets' 24 x 24,
    so that the selection grid keeps its cells per side: READ-7B (down_sample 2, 12 x 12 cells
    on a 24 x 24 grid) becomes down_sample 1 on the tiny model's 12 x 12 grid, the setting the
    shipped tiny model was trained with. Grids of 24 a side or more are left as they are."""
    side = min(int(v) for v in grid_hw)
    if side >= PRESET_GRID_SIDE:
        return cfg
    return cfg.replace(down_sample=max(1, cfg.down_sample * side // PRESET_GRID_SIDE))


def check_out(path: str) -> None:
    """Raise ``UserError`` unless ``path`` names a PNG file that can be written."""
    if not str(path).lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {path}")
    if os.path.isdir(path):
        raise UserError(f"--out {path} is a folder; name a .png file")
    folder = os.path.dirname(os.path.abspath(path))
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"cannot write {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: {probe} is not writable")


def _check_image(path: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"image not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"--image must be a file, {path} is a folder")


@dataclass
class DemoResult:
    """What ``run_demo`` did: the picture, the answer, and what SAM got per [SEG]."""

    out: str
    answer: str
    has_object: bool
    rendering: Any = None
    points: Any = None
    labels: Any = None
    masks: Any = None
    notes: List[str] = field(default_factory=list)
    trained: bool = False


def _load(model: str, sam_checkpoint: Optional[str], seed: int, notes: List[str]):
    """(model, processor, trained): trained is True for a user checkpoint or the shipped model."""
    from .models.seg_llava import CheckpointError, InputError, build_tiny, load_model
    from .models.seg_llava.pretrained_tiny import has_pretrained_tiny, load_pretrained_tiny

    try:
        if model != "tiny":
            return (*load_model(model, sam_checkpoint=sam_checkpoint), True)
        if sam_checkpoint is not None:
            raise UserError("--sam-checkpoint needs --model: the tiny model's SAM is not a released SAM")
        if has_pretrained_tiny():
            notes.append("tiny model trained on the synthetic shapes task (ships with sasp; knows those shapes only)")
            return (*load_pretrained_tiny(), True)
        notes.append("the trained tiny model is not installed; using the tiny random model: heat-map and mask "
                     "show the pipeline, not a trained result")
        return (*build_tiny(seed=seed), False)
    except (InputError, CheckpointError) as err:
        raise UserError(str(err)) from None


def _title(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 3] + "..."


def run_demo(
    model: str = "tiny",
    image: Optional[str] = None,
    prompt: str = DEFAULT_PROMPT,
    answer: Optional[str] = None,
    out: str = DEFAULT_OUT,
    sam_checkpoint: Optional[str] = None,
    preset: str = "read-7b",
    sam_prompt: str = "both",
    max_new_tokens: int = 32,
    device: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    """The body of ``sasp demo``; raises ``UserError`` for bad input.

    ``image=None`` segments the default synthetic scene (``demo_sample()``). ``preset`` is
    applied through ``grid_adapted`` (the presets' selection grid on this model's token grid).
    ``answer=None`` generates the answer (the random tiny fallback uses ``TINY_ANSWER``)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("the prompt is empty; say what to segment, e.g. --prompt 'Segment the red circle.'")
    if image is not None:
        _check_image(image)
    check_out(out)
    if model != "tiny" and not os.path.exists(model):
        raise UserError(f"model folder not found: {model}")
    if sam_checkpoint is not None and not os.path.isfile(sam_checkpoint):
        raise UserError(f"SAM checkpoint not found: {sam_checkpoint}")

    import torch
    from tqdm.auto import tqdm

    from .config import PRESETS
    from .models.seg_llava import InputError
    from .viz import render

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UserError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1 ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    bar = tqdm(total=4, disable=not progress, unit="step", bar_format="{desc:<26}{bar:20} {n_fmt}/{total_fmt} [{elapsed}]")
    try:
        bar.set_description("loading model")
        notes: List[str] = []
        net, processor, trained = _load(model, sam_checkpoint, seed, notes)
        if not trained and answer is None:
            answer = TINY_ANSWER
            notes.append(f"the tiny random model cannot generate an answer; it is fixed to {TINY_ANSWER!r}")
        net.config.with_sasp(grid_adapted(PRESETS[preset], net.grid_hw), sam_prompt)
        net = net.to(device).eval()
        bar.update()

        bar.set_description("preparing inputs")
        picture = image if image is not None else demo_sample().image
        try:
            batch = processor(images=[picture], prompts=[prompt], answers=[answer] if answer else None)
        except InputError as err:
            raise UserError(str(err)) from None
        prompt_len = batch["input_ids"].shape[1]
        batch = {k: v.to(device) for k, v in batch.items()}
        bar.update()

        bar.set_description("generating + segmenting")
        try:
            result = net.segment(**batch, max_new_tokens=0 if answer else max_new_tokens)
        except InputError as err:
            raise UserError(str(err)) from None
        text = answer if answer else processor.decode(result.sequences, prompt_len)[0]
        bar.update()

        bar.set_description("drawing")
        found = bool(result.has_object[0])
        mask = result.masks[0].cpu() if found else None
        sim = result.similarity.cpu() if found else None
        points = result.points.detach().cpu() if result.points is not None else None
        labels = result.labels.cpu() if result.labels is not None else None
        short = _title(prompt)
        titles = ([short] if mask.shape[0] == 1 else [f"[SEG] {i}: {short}" for i in range(mask.shape[0])]) if found \
            else [f"no object: {short}"]
        panel = min(720, max(384, TITLE_CHAR_PX * (max(len(t) for t in titles) + len(": similarity"))))
        try:
            rendering = render(picture, sim=sim, points=points, labels=labels, mask=mask, out=out,
                               cfg=net.config.sasp_config(), grid_hw=net.grid_hw, titles=titles, panel_size=panel)
        except OSError as err:
            raise UserError(f"cannot write {out}: {err.strerror or err}") from None
        bar.update()
    finally:
        bar.close()
    return DemoResult(out=os.path.abspath(out), answer=text, has_object=found, rendering=rendering, points=points, labels=labels,
                      masks=result.masks[0].cpu(), notes=notes, trained=trained)
