"""Bad folders: one ``ConversionError`` line naming what is wrong, ``sasp convert`` exits 2, and
nothing is left at the destination."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sasp.cli import main
from sasp.convert import ConversionError, convert_checkpoint

from fakes import make_family, tiny_sam_config

SAM = json.dumps(tiny_sam_config())


def _cli(capsys, *argv: str):
    rc = main(["convert", *argv, "--sam-config", SAM])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _shards(src: Path):
    index_file = src / "pytorch_model.bin.index.json"
    return index_file, json.loads(index_file.read_text())


def _expect_error(capsys, tmp_path: Path, src: Path, *needles: str, extra=()) -> None:
    dst = tmp_path / "out"
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(src, dst, sam_config=tiny_sam_config(), **dict(extra))
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message
    argv = [str(src), str(dst)] + [f"--{k.replace('_', '-')}={v}" for k, v in extra]
    rc, out, err_text = _cli(capsys, *argv)
    assert rc == 2 and out == ""
    lines = err_text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sasp convert: error:") and all(n in lines[0] for n in needles), err_text
    assert not dst.exists() and not list(tmp_path.glob(".sasp-convert-*"))


def test_wrong_family(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "lisa")
    _expect_error(capsys, tmp_path, src, "LISA checkpoint", "LISAForCausalLM", "not SESAME", extra=[("family", "sesame")])


def test_missing_shard(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "sesame")
    (src / "pytorch_model-00002-of-00003.bin").unlink()
    _expect_error(capsys, tmp_path, src, "pytorch_model-00002-of-00003.bin", "missing")


def test_unknown_key(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "read")
    index_file, index = _shards(src)
    shard = src / "pytorch_model-00003-of-00003.bin"
    state = torch.load(shard, weights_only=True)
    state["model.seg_head.weight"] = torch.zeros(2)
    torch.save(state, shard)
    index["weight_map"]["model.seg_head.weight"] = shard.name
    index_file.write_text(json.dumps(index))
    _expect_error(capsys, tmp_path, src, "unknown key", "model.seg_head.weight", shard.name)


def test_missing_weight(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "gsva")
    index_file, index = _shards(src)
    shard = src / index["weight_map"].pop("model.norm.weight")
    state = torch.load(shard, weights_only=True)
    del state["model.norm.weight"]
    torch.save(state, shard)
    index_file.write_text(json.dumps(index))
    _expect_error(capsys, tmp_path, src, "lacks a weight for", "model.language_model.norm.weight")


def test_index_and_shard_disagree(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "lisa")
    index_file, index = _shards(src)
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "pytorch_model-00001-of-00003.bin"
    index_file.write_text(json.dumps(index))
    _expect_error(capsys, tmp_path, src, "model.layers.9.mlp.up_proj.weight", "does not hold it")


def test_wrong_shape(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "sesame")
    index_file, index = _shards(src)
    shard = src / index["weight_map"]["model.text_hidden_fcs.0.2.weight"]
    state = torch.load(shard, weights_only=True)
    state["model.text_hidden_fcs.0.2.weight"] = torch.zeros(7, 32)
    torch.save(state, shard)
    _expect_error(capsys, tmp_path, src, "text_hidden_fcs.0.2.weight", "(7, 32)")


def test_gsva_needs_rej(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "lisa")
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["LisaGSVAForCausalLM"]
    (src / "config.json").write_text(json.dumps(config))
    _expect_error(capsys, tmp_path, src, "no [REJ] token", "GSVA")


def test_no_vision_tower(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "lisa")
    config = json.loads((src / "config.json").read_text())
    config["mm_vision_tower"] = config["vision_tower"] = "openai/clip-vit-large-patch14"
    (src / "config.json").write_text(json.dumps(config))
    _expect_error(capsys, tmp_path, src, "no vision-tower weights", "--vision-tower", "openai/clip-vit-large-patch14")


def test_family_undecidable(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "read")
    config = json.loads((src / "config.json").read_text())
    del config["architectures"]
    (src / "config.json").write_text(json.dumps(config))
    _expect_error(capsys, tmp_path, src, "cannot tell the family", "--family")


def test_unreadable_shard(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "lisa")
    (src / "pytorch_model-00001-of-00003.bin").write_bytes(b"not a pickle")
    _expect_error(capsys, tmp_path, src, "pytorch_model-00001-of-00003.bin", "not a readable state dict")


def test_not_a_folder(tmp_path, capsys) -> None:
    _expect_error(capsys, tmp_path, tmp_path / "nowhere", "does not exist")


def test_existing_destination_kept(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "lisa")
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    rc, _, err = _cli(capsys, str(src), str(dst))
    assert rc == 2 and "already exists" in err and (dst / "keep.txt").exists()
    rc, out, _ = _cli(capsys, str(src), str(dst), "--overwrite")
    assert rc == 0 and "wrote" in out and not (dst / "keep.txt").exists() and (dst / "config.json").exists()


def test_cli_success_and_help(tmp_path, capsys) -> None:
    src = make_family(tmp_path, "read")
    rc, out, err = _cli(capsys, str(src), str(tmp_path / "out"), "--sasp", "none")
    assert rc == 0 and "family: READ" in out and "SasP: off" in out
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "merge_lora_weights_and_save_hf_model.py" in capsys.readouterr().out
