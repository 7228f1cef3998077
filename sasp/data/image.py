"""Reading images the way a user expects: EXIF orientation applied, any mode to RGB uint8.

16-bit and 32-bit greyscale are scaled to 8 bits by their type's range (not clipped), palette
and greyscale images are expanded, and transparency is composited onto ``BACKGROUND`` (white)
rather than dropped. Pillow is imported on first use.
"""
from __future__ import annotations

import os
from typing import Any, Tuple

import numpy as np

BACKGROUND: Tuple[int, int, int] = (255, 255, 255)
"""What transparent pixels become (RGB)."""


def _pil_to_rgb(im: Any) -> np.ndarray:
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im, dtype=np.uint16).astype(np.float64) / 65535.0
        return np.repeat((arr * 255 + 0.5).astype(np.uint8)[..., None], 3, -1)
    if im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode == "I" and arr.max(initial=0) > 255 else (255.0 if im.mode == "I" else 1.0)
        return np.repeat((np.clip(arr / hi, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None], 3, -1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def load_image(image: Any) -> np.ndarray:
    """An RGB uint8 array [H, W, 3] from a path, a PIL image, an array or a tensor.

    Arrays and tensors may be [H, W, 3], [3, H, W], [H, W] or [H, W, 4] (alpha composited on
    ``BACKGROUND``), uint8, uint16 (scaled by 65535) or float in [0, 1]. Files go through
    Pillow with their EXIF orientation applied.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the array has another shape, or the file is not an image.
    """
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        if not os.path.isfile(image):
            raise FileNotFoundError(f"image not found: {os.fspath(image)}")
        try:
            with Image.open(image) as im:
                im.load()
                return _pil_to_rgb(im)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"cannot read {os.fspath(image)} as an image ({type(err).__name__}: {err})") from None
    if hasattr(image, "convert") and hasattr(image, "size") and hasattr(image, "mode"):  # PIL.Image
        return _pil_to_rgb(image)
    if hasattr(image, "detach"):  # torch.Tensor, without importing torch here
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape:
        raise ValueError(f"image must be [H, W, 3], [3, H, W], [H, W] or [H, W, 4], got shape {arr.shape}")
    if arr.dtype == np.uint8 and arr.shape[-1] == 3:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint8:
        f = arr.astype(np.float64) / 255.0
    elif arr.dtype == np.uint16:
        f = arr.astype(np.float64) / 65535.0
    elif arr.dtype.kind in "fb":
        f = np.clip(arr.astype(np.float64), 0.0, 1.0)
    else:
        raise ValueError(f"image dtype must be uint8, uint16, bool or float in [0, 1], got {arr.dtype}")
    if arr.shape[-1] == 4:
        alpha = f[..., 3:]
        f = f[..., :3] * alpha + np.asarray(BACKGROUND, np.float64) / 255.0 * (1 - alpha)
    elif arr.shape[-1] == 1:
        f = np.repeat(f, 3, -1)
    return (f * 255 + 0.5).astype(np.uint8)
