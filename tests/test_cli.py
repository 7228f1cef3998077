"""The `sasp` command and the examples, end to end (tiny offline model, temporary folders).

The pictures are checked by content: the PNG the console script writes equals, pixel for
pixel, the one rendered in-process, and there every positive SasP point is a green marker at
its image position.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the demo needs transformers")
pytest.importorskip("segment_anything", reason="the demo needs segment_anything")
pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

from sasp import cli, demo as demo_mod  # noqa: E402
from sasp.viz import POSITIVE_COLOR  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def sasp_command():
    exe = shutil.which("sasp")
    return [exe] if exe else [sys.executable, "-m", "sasp.cli"]


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def green_pixels(arr: np.ndarray) -> int:
    return int((np.abs(arr.astype(int) - np.array(POSITIVE_COLOR)).max(-1) < 30).sum())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo.png"
    return demo_mod.run_demo(out=str(out), progress=False, device="cpu")


# --------------------------------------------------------------------------- help


def test_help_explains_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("demo", "compare", "train", "Similarity as Points", "sasp demo"):
        assert word in text
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = capsys.readouterr().out
    for word in ("--image", "--prompt", "--model", "--out", "examples:", "positive", "offline"):
        assert word in text
    for word in ("1024 px", 'sasp[hf,viz]'):
        assert word in text
    assert cli.main([]) == 2  # no command: the help, and a usage exit code


# --------------------------------------------------------------------------- demo


def test_demo_picture_shows_points_heatmap_and_mask(demo):
    png = read_png(demo.out)
    r = demo.rendering
    assert np.array_equal(png, r.array)
    # the shipped trained model generates the answer itself (the tiny tokenizer lower-cases words)
    assert demo.trained and demo.answer == "sure, [SEG]." and demo.has_object
    assert set(r.panels) == {(0, "similarity"), (0, "mask")}
    labels, points = demo.labels[0], demo.points[0]
    assert (labels == 1).any() and set(labels.tolist()) <= {1, 0, -1}
    for (x, y), lab in zip(points.tolist(), labels.tolist()):
        if lab == 1:
            for panel in ("similarity", "mask"):
                pixel = png[r.to_pixel(0, panel, x, y)]
                assert np.abs(pixel.astype(int) - POSITIVE_COLOR).max() < 30, (x, y, panel, pixel)
    # the heat-map changes the crop region of the left panel; the right panel shows the mask
    h, w = demo_mod.demo_sample().image.shape[:2]
    left = png[r.to_pixel(0, "similarity", w // 2, h - 5)]
    right = png[r.to_pixel(0, "mask", w // 2, h - 5)]
    assert not np.array_equal(left, right)
    assert demo.masks.shape == (1, h, w)


def test_sasp_demo_console_script_end_to_end(demo, tmp_path):
    out = tmp_path / "cli.png"
    proc = subprocess.run(
        sasp_command() + ["demo", "--out", str(out)], capture_output=True, text=True, env=OFFLINE_ENV, timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "answer: sure, [SEG]." in proc.stdout
    assert "Traceback" not in proc.stderr
    assert np.array_equal(read_png(out), demo.rendering.array)  # same picture as in-process


def test_quickstart_example_runs_offline(tmp_path):
    out = tmp_path / "quickstart.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(out)],
        capture_output=True, text=True, env=OFFLINE_ENV, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "answer: sure, [SEG]." in proc.stdout
    iou = float(proc.stdout.split("IoU with the target: ")[1].split()[0])
    assert iou >= 0.5  # the shipped model on the demo scene
    png = read_png(out)
    assert png.shape[1] > png.shape[0] and green_pixels(png) > 100  # two panels, positive markers


def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_visualize_example_points_land_on_the_red_circle(tmp_path, capsys):
    import torch

    from sasp import READ_7B, similarity_as_points

    mod = _load_example("visualize")
    out = tmp_path / "v.png"
    assert mod.main(["--out", str(out)]) == str(out)
    assert green_pixels(read_png(out)) > 100
    # the stand-in similarity must put every positive point on red pixels (geometry check)
    img = demo_mod.synthetic_image()
    target = np.array([220.0, 40.0, 40.0], dtype=np.float32)
    sim = -torch.from_numpy(np.linalg.norm(mod.clip_patches(img) - target, axis=-1)).reshape(1, -1)
    points, labels, _ = similarity_as_points(sim, [list(img.shape[:2])], READ_7B)
    pos = points[0][labels[0] == 1].round().long()
    assert len(pos) > 5
    assert all(tuple(img[y, x]) == (220, 40, 40) for x, y in pos.tolist())


# --------------------------------------------------------------------------- bad input


def run_main(argv, capsys):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_bad_inputs_exit_2_with_a_clear_message(tmp_path, capsys):
    out = str(tmp_path / "x.png")
    rc, err = run_main(["demo", "--image", str(tmp_path / "missing.jpg"), "--out", out], capsys)
    assert rc == 2 and "image not found" in err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00 definitely not a JPEG")
    rc, err = run_main(["demo", "--image", str(bad), "--out", out], capsys)
    assert rc == 2 and "cannot read" in err
    rc, err = run_main(["demo", "--prompt", "  ", "--out", out], capsys)
    assert rc == 2 and "prompt is empty" in err
    rc, err = run_main(["demo", "--out", str(tmp_path / "x.jpg")], capsys)
    assert rc == 2 and ".png" in err
    rc, err = run_main(["demo", "--model", str(tmp_path / "nowhere"), "--out", out], capsys)
    assert rc == 2 and "not found" in err
    family = tmp_path / "bert"
    family.mkdir()
    (family / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    rc, err = run_main(["demo", "--model", str(family), "--out", out], capsys)
    assert rc == 2 and "'bert' model" in err
    rc, err = run_main(["demo", "--prompt", "red " * 600, "--out", out, "--quiet"], capsys)
    assert rc == 2 and "context" in err
    rc, err = run_main(["demo", "--device", "tpu-ish", "--out", out, "--quiet"], capsys)
    assert rc == 2 and "not a device name" in err
    assert not os.path.exists(out)
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--no-such-option"])
    assert exc.value.code == 2


def test_bad_input_from_the_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run(
        sasp_command() + ["demo", "--image", str(tmp_path / "missing.png")],
        capture_output=True, text=True, env=OFFLINE_ENV, timeout=120,
    )
    assert proc.returncode == 2
    assert "image not found" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- output, extras


@pytest.mark.parametrize("kind", ["folder", "file_as_folder", "unwritable"])
def test_bad_out_is_one_line_and_exit_2(tmp_path, capsys, kind):
    if kind == "folder":
        out = tmp_path / "pics.png"
        out.mkdir()
    elif kind == "file_as_folder":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "pic.png"
    else:
        if os.geteuid() == 0:
            out = Path("/proc/sasp_demo.png")  # root may write anywhere but here
        else:
            locked = tmp_path / "locked"
            locked.mkdir(mode=0o500)
            out = locked / "pic.png"
    rc, err = run_main(["demo", "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 1 and str(out) in err, err


def test_missing_extra_is_named_not_a_traceback(tmp_path):
    code = ("import sys; sys.modules['transformers'] = None; from sasp.cli import main; "
            f"sys.exit(main(['demo', '--quiet', '--out', {str(tmp_path / 'x.png')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=OFFLINE_ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "sasp[hf]"' in proc.stderr and "Traceback" not in proc.stderr
