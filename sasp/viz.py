"""One picture of SasP: the image, the <SEG> similarity heat-map, the point prompts and the mask.

    >>> from sasp.viz import render
    >>> r = render(image, sim=sim, points=points, labels=labels, mask=mask, out="sasp.png")
    >>> r.path, r.array.shape          # the PNG written, and its pixels (rows, cols, 3) uint8

Each <SEG> gets one row of panels: "similarity" (the heat-map of its patch-token similarity
over the image, where the token grid actually lies: CLIP's centre crop or LLaVA's padded
square, from ``cfg.geometry``) when ``sim`` is given, and "mask" (the predicted mask over the
image) when ``mask`` is given; with neither, one "image" panel. The points are drawn on every
panel: positive (label 1) as green filled circles, negative (label 0) as red
crosses, neutral (label -1, which SAM reads as "not a point") as hollow yellow circles.

matplotlib is an optional dependency (``pip install sasp[viz]``); it is imported on first use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .config import SasPConfig
from .data.image import load_image
from .geometry import grid_padding, grid_shape

POSITIVE_COLOR = (0, 255, 0)
NEGATIVE_COLOR = (255, 0, 0)
NEUTRAL_COLOR = (255, 255, 0)
MASK_COLOR = (255, 0, 255)
HEATMAP_CMAP = "jet"
DRAW_MAX_SIDE = 1024
"""Images (and masks) are drawn from a copy at most this many pixels a side, so that drawing
takes the same time and memory for a 640 px photo and a 10,000 px scan."""

ImageLike = Union[str, os.PathLike, np.ndarray, Tensor, Any]


@dataclass
class Rendering:
    """What ``render`` drew.

    Attributes:
        array: the picture, [rows, cols, 3] uint8 (what the PNG holds).
        path: the PNG written, or None.
        panels: ``(seg_index, "similarity" | "mask" | "image")`` -> matplotlib Axes (for
            ``to_pixel``).
    """

    array: np.ndarray
    path: Optional[str] = None
    panels: Dict[Tuple[int, str], Any] = field(default_factory=dict)

    def to_pixel(self, seg: int, panel: str, x: float, y: float) -> Tuple[int, int]:
        """(row, col) in ``array`` of image pixel (x, y) on a panel."""
        ax = self.panels[(seg, panel)]
        dx, dy = ax.transData.transform((x, y))
        return int(round(self.array.shape[0] - dy - 0.5)), int(round(dx - 0.5))


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("sasp.viz needs matplotlib: pip install 'sasp[viz]'") from err
    return matplotlib, plt


def _rows(x: Optional[Union[Tensor, np.ndarray]], dims: int, name: str) -> Optional[np.ndarray]:
    """Add the leading <SEG> axis when absent; return a numpy array with ``dims`` axes."""
    if x is None:
        return None
    a = x.detach().float().cpu().numpy() if isinstance(x, Tensor) and x.is_floating_point() else np.asarray(
        x.detach().cpu() if isinstance(x, Tensor) else x
    )
    if a.ndim == dims - 1:
        a = a[None]
    if a.ndim != dims:
        raise ValueError(f"{name} must have {dims - 1} or {dims} axes, got shape {a.shape}")
    return a


def heatmap_extent(
    image_hw: Tuple[int, int], grid: Tuple[int, int], geometry: str
) -> Tuple[float, float, float, float]:
    """Where the token grid lies on the image, as imshow's (left, right, bottom, top) in
    pixel coordinates: cell (r, c) is centred on ((c + 0.5) * W / gw, (r + 0.5) * H / gh),
    the same mapping ``select_points`` uses, with (gh, gw) the grid padded by
    ``sasp.geometry.grid_padding`` to cover the whole image."""
    h, w = image_hw
    pad = grid_padding(torch.tensor([[h, w]]), grid, geometry)[0].tolist()
    gh, gw = grid[0] + 2 * pad[0], grid[1] + 2 * pad[1]
    ch, cw = h / gh, w / gw
    # pixel (x, y) has its centre at x; a cell spans [c * cw, (c + 1) * cw) in continuous
    # coordinates whose pixel centres sit at +0.5, hence the -0.5 shift.
    left, top = pad[1] * cw - 0.5, pad[0] * ch - 0.5
    return left, left + grid[1] * cw, top + grid[0] * ch, top


def render(
    image: ImageLike,
    sim: Optional[Tensor] = None,
    points: Optional[Tensor] = None,
    labels: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    out: Optional[Union[str, os.PathLike]] = None,
    *,
    cfg: Optional[SasPConfig] = None,
    grid_hw: Optional[Tuple[int, int]] = None,
    titles: Optional[List[str]] = None,
    heatmap_alpha: float = 0.5,
    mask_alpha: float = 0.5,
    panel_size: int = 384,
    marker_size: float = 70.0,
    colorbar: bool = True,
) -> Rendering:
    """Render the image, the similarity heat-map, the points and the mask; optionally save a PNG.

    Args:
        image: path, PIL image, array or tensor (see ``load_image``), size (H, W).
        sim (Tensor): [N_p] or [M, N_p] similarity of each <SEG> with the patch tokens.
        points (Tensor): [K, 2] or [M, K, 2] pixel points (x, y) in the image.
        labels (Tensor): [K] or [M, K] in {1, 0, -1}; default all 1.
        mask (Tensor): [H, W] or [M, H, W] binary mask (bool or 0/1; threshold logits first).
        out (str): PNG path to write (folders are created); None renders only.
        cfg (SasPConfig): its ``geometry`` places the heat-map ("center_crop" by default).
        grid_hw (tuple): token grid (rows, cols); default sqrt(N_p) x sqrt(N_p).
        titles (list[str]): one title per <SEG> row (e.g. the prompt).
        panel_size: the longer side of each panel, in output pixels.
        colorbar: draw the heat-map's colour bar (normalised similarity, 0 to 1).

    Large images are drawn from a copy of at most ``DRAW_MAX_SIDE`` pixels a side (points
    and the heat-map stay in the original pixel coordinates).

    Returns:
        Rendering: the pixels, the path, and the panels (for ``Rendering.to_pixel``).
    """
    _, plt = _matplotlib()
    cfg = cfg or SasPConfig()
    img = load_image(image)
    h, w = img.shape[:2]
    sims = _rows(sim, 2, "sim")
    pts = _rows(points, 3, "points")
    labs = _rows(labels, 2, "labels")
    masks = _rows(mask, 3, "mask")
    counts = {len(a) for a in (sims, pts, labs, masks) if a is not None}
    if len(counts) > 1:
        raise ValueError(f"sim, points, labels and mask disagree on the number of <SEG> rows: {sorted(counts)}")
    m = counts.pop() if counts else 1
    if pts is not None and pts.shape[-1] != 2:
        raise ValueError(f"points must be [..., K, 2] (x, y), got shape {pts.shape}")
    if labs is None and pts is not None:
        labs = np.ones(pts.shape[:2], dtype=np.int64)
    if labs is not None and pts is not None and labs.shape != pts.shape[:2]:
        raise ValueError(f"labels {labs.shape} must match points {pts.shape[:2]}")
    if masks is not None:
        if masks.shape[1:] != (h, w):
            raise ValueError(f"mask has size {masks.shape[1:]}, the image is {(h, w)}")
        if masks.dtype.kind == "f" and not np.isin(masks, (0.0, 1.0)).all():
            raise ValueError("mask holds non-binary floats; threshold first (e.g. logits > 0)")
        masks = masks != 0
    grid = grid_shape(sims.shape[-1], grid_hw) if sims is not None else None
    img, masks = _draw_copies(img, masks)

    kinds = (["similarity"] if sims is not None else []) + (["mask"] if masks is not None else [])
    kinds = kinds or ["image"]
    scale = panel_size / max(h, w)
    pw, ph = w * scale, h * scale
    title_px, legend_px, gap = 28, 34, 8
    gap = gap + (24 if colorbar and sims is not None else 0)
    fig_w = len(kinds) * pw + (len(kinds) + 1) * gap
    fig_h = m * (ph + title_px + gap) + legend_px
    dpi = 100
    fig = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="white")
    rendering = Rendering(array=np.zeros((0, 0, 3), np.uint8))
    try:
        for row in range(m):
            for col, kind in enumerate(kinds):
                left = gap + col * (pw + gap)
                bottom = legend_px + (m - 1 - row) * (ph + title_px + gap)
                ax = fig.add_axes((left / fig_w, bottom / fig_h, pw / fig_w, ph / fig_h))
                ax.imshow(img, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")
                if kind == "similarity":
                    s = sims[row].astype(np.float64)
                    span = s.max() - s.min()
                    s = (s - s.min()) / span if span > 0 else np.zeros_like(s)
                    heat = ax.imshow(
                        s.reshape(grid), cmap=HEATMAP_CMAP, vmin=0, vmax=1, alpha=heatmap_alpha,
                        extent=heatmap_extent((h, w), grid, cfg.geometry), interpolation="bilinear",
                    )
                    if colorbar:
                        cax = fig.add_axes(((left + pw + 2) / fig_w, bottom / fig_h, 6 / fig_w, ph / fig_h))
                        fig.colorbar(heat, cax=cax).ax.tick_params(labelsize=6)
                elif masks is not None:
                    overlay = np.zeros(masks.shape[1:] + (4,), np.float32)
                    overlay[masks[row]] = (*(c / 255 for c in MASK_COLOR), mask_alpha)
                    ax.imshow(overlay, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
                if pts is not None:
                    _draw_points(ax, pts[row], labs[row], marker_size)
                ax.set_xlim(-0.5, w - 0.5)
                ax.set_ylim(h - 0.5, -0.5)
                ax.set_axis_off()
                name = titles[row] if titles and row < len(titles) else f"<SEG> {row}"
                ax.set_title(name if kind == "image" else f"{name}: {kind}", fontsize=9, pad=3)
                rendering.panels[(row, kind)] = ax
        if pts is not None:
            _legend(fig, plt)
        fig.canvas.draw()
        rendering.array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        if out is not None:
            out = os.fspath(out)
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            from PIL import Image

            Image.fromarray(rendering.array).save(out, format="PNG")
            rendering.path = out
    finally:
        plt.close(fig)
    return rendering


def _draw_copies(img: np.ndarray, masks: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The image (area-averaged) and masks (nearest) at most ``DRAW_MAX_SIDE`` a side."""
    h, w = img.shape[:2]
    scale = DRAW_MAX_SIDE / max(h, w)
    if scale >= 1:
        return img, masks
    from PIL import Image

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))
    if masks is not None:
        masks = np.stack([np.asarray(Image.fromarray(m).resize(size, Image.Resampling.NEAREST)) for m in masks])
    return small, masks


def _draw_points(ax, pts: np.ndarray, labs: np.ndarray, size: float) -> None:
    rgb = {k: tuple(c / 255 for c in v) for k, v in
           (("pos", POSITIVE_COLOR), ("neg", NEGATIVE_COLOR), ("neu", NEUTRAL_COLOR))}
    neu, neg, pos = pts[labs == -1], pts[labs == 0], pts[labs == 1]
    if len(neu):
        ax.scatter(neu[:, 0], neu[:, 1], s=size * 0.6, facecolors="none", edgecolors=[rgb["neu"]], linewidths=1.5, zorder=3)
    if len(neg):
        ax.scatter(neg[:, 0], neg[:, 1], s=size, marker="X", c=[rgb["neg"]], edgecolors="black", linewidths=0.5, zorder=4)
    if len(pos):
        ax.scatter(pos[:, 0], pos[:, 1], s=size, marker="o", c=[rgb["pos"]], edgecolors="black", linewidths=0.5, zorder=5)


def _legend(fig, plt) -> None:
    from matplotlib.lines import Line2D

    rgb = lambda c: tuple(v / 255 for v in c)  # noqa: E731
    handles = [
        Line2D([], [], marker="o", ls="", color=rgb(POSITIVE_COLOR), markeredgecolor="black", label="positive (1)"),
        Line2D([], [], marker="X", ls="", color=rgb(NEGATIVE_COLOR), markeredgecolor="black", label="negative (0)"),
        Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor=rgb(NEUTRAL_COLOR), label="neutral (-1)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)


__all__ = ["Rendering", "heatmap_extent", "load_image", "render"]
