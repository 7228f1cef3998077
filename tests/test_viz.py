"""sasp.viz: the picture's content is checked pixel by pixel, not only that a PNG exists."""
import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

from sasp import SasPConfig  # noqa: E402
from sasp.viz import MASK_COLOR, NEGATIVE_COLOR, POSITIVE_COLOR, heatmap_extent, load_image, render  # noqa: E402

H, W = 120, 200
GRID = 6  # 6 x 6 token grid


def gray_image():
    return np.full((H, W, 3), 128, np.uint8)


def close(pixel, color, tol=40):
    return bool(np.abs(pixel.astype(int) - np.array(color)).max() <= tol)


def test_heatmap_extent_center_crop_and_pad_square():
    # centre crop of 120 x 200: the 6 x 6 grid covers x in [40, 160) (cells of 20 px), all rows
    left, right, bottom, top = heatmap_extent((H, W), (GRID, GRID), "center_crop")
    assert (left, right, bottom, top) == pytest.approx((40 - 0.5, 160 - 0.5, 120 - 0.5, -0.5))
    # pad to square: 200 x 200 padded image, 6 cells of 33.3 px; the rows beyond the image
    # (pad 40 px top and bottom) are cropped by grid_padding: grid spans y in [-40, 160)
    left, right, bottom, top = heatmap_extent((H, W), (GRID, GRID), "pad_square")
    assert left == pytest.approx(-0.5) and right == pytest.approx(W - 0.5)
    assert top < -0.5 and bottom > H - 0.5


def test_render_places_points_heatmap_and_mask(tmp_path):
    sim = torch.zeros(GRID, GRID)
    sim[:, 3:] = 1.0  # right half of the centre crop is "the object"
    points = torch.tensor([[[130.0, 60.0], [50.0, 20.0], [60.0, 100.0]]])
    labels = torch.tensor([[1, 0, -1]])
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 10:50, 150:190] = True
    out = tmp_path / "sub" / "viz.png"
    r = render(gray_image(), sim=sim.reshape(1, -1), points=points, labels=labels, mask=mask, out=out)
    assert r.path == str(out)
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape == r.array.shape and np.array_equal(png, r.array)
    assert png.shape[1] > png.shape[0]  # two panels side by side

    for panel in ("similarity", "mask"):
        assert close(png[r.to_pixel(0, panel, 130, 60)], POSITIVE_COLOR)
        assert close(png[r.to_pixel(0, panel, 50, 20)], NEGATIVE_COLOR)
        # a neutral point is a hollow ring: its centre shows what lies below
        assert not close(png[r.to_pixel(0, panel, 60, 100)], POSITIVE_COLOR)
    # heat-map: high similarity (right half of the crop) is red in jet, low is blue; outside
    # the centre crop (x < 40) the image is untouched
    hot = png[r.to_pixel(0, "similarity", 150, 100)]
    cold = png[r.to_pixel(0, "similarity", 45, 60)]
    assert hot[0] > hot[2] + 40 and cold[2] > cold[0] + 40
    assert close(png[r.to_pixel(0, "similarity", 10, 60)], (128, 128, 128), tol=3)
    # mask panel: tinted inside the mask, untouched outside
    inside = png[r.to_pixel(0, "mask", 170, 30)]
    expected = 0.5 * np.array(MASK_COLOR) + 0.5 * 128
    assert close(inside, expected, tol=6)
    assert close(png[r.to_pixel(0, "mask", 100, 100)], (128, 128, 128), tol=3)


def test_render_several_seg_rows_and_no_mask():
    sims = torch.randn(2, GRID * GRID)
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    r = render(gray_image(), sim=sims, mask=masks, titles=["first", "second"])
    assert set(r.panels) == {(0, "similarity"), (0, "mask"), (1, "similarity"), (1, "mask")}
    assert r.path is None and r.array.shape[0] > r.array.shape[1] / 2
    assert set(render(gray_image(), sim=sims).panels) == {(0, "similarity"), (1, "similarity")}
    only_image = render(gray_image(), points=torch.tensor([[[20.0, 30.0]]]), titles=["no object"])
    assert set(only_image.panels) == {(0, "image")}
    assert close(only_image.array[only_image.to_pixel(0, "image", 20, 30)], POSITIVE_COLOR)


def test_render_uses_the_configured_geometry():
    sim = torch.ones(1, GRID * GRID)
    sim[0, 0] = 0  # not constant
    crop = render(gray_image(), sim=sim)
    square = render(gray_image(), sim=sim, cfg=SasPConfig(geometry="pad_square"))
    # x = 10 is outside the centre crop but inside the padded square's grid
    assert close(crop.array[crop.to_pixel(0, "similarity", 10, 60)], (128, 128, 128), tol=3)
    assert not close(square.array[square.to_pixel(0, "similarity", 10, 60)], (128, 128, 128), tol=3)


def test_render_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="number of <SEG> rows"):
        render(gray_image(), sim=torch.randn(2, 36), mask=torch.zeros(3, H, W, dtype=torch.bool))
    with pytest.raises(ValueError, match="threshold"):
        render(gray_image(), mask=torch.randn(1, H, W))
    with pytest.raises(ValueError, match="mask has size"):
        render(gray_image(), mask=torch.zeros(1, H + 1, W, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels"):
        render(gray_image(), points=torch.zeros(1, 3, 2), labels=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="perfect square"):
        render(gray_image(), sim=torch.randn(1, 35))


def test_load_image_variants(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png"), arr)
    assert np.array_equal(load_image(Image.fromarray(arr)), arr)
    assert np.array_equal(load_image(torch.from_numpy(arr).permute(2, 0, 1)), arr)
    assert load_image(np.zeros((5, 7))).shape == (5, 7, 3)
    assert load_image(np.ones((5, 7, 3), np.float32))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="image must be"):
        load_image(np.zeros((5, 7, 4, 2)))
