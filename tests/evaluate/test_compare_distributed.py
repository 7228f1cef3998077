"""Two CPU processes (gloo, joined through torchrun's environment variables) give the single
process's summary bit for bit; a 2-process run's folder resumes in a 1-process run and the
other way round, with the samples left dealt evenly."""
import json
import multiprocessing as mp
import os
import socket

import pytest
import torch

from sasp.cli import main
from sasp.evaluate.rows import rank_file

ARGS = ["compare", "--data", "toy", "--data-arg", "n=21", "--data-arg", "no_target=[2, 11]", "--data-arg", "broken=[6]",
        "--arms", "toy", "--arm-arg", "fail=[15]", "--batch-size", "2", "--resamples", "300", "--no-plot", "--quiet"]


def _rank(rank, port, argv, code):
    """A torchrun-like child: the environment torchrun sets, then the command."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="")
    code.value = main(argv)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(argv):
    ctx = mp.get_context("fork")  # the children share this process's imports: no second torch import
    port, codes = _free_port(), [ctx.Value("i", -1) for _ in range(2)]
    procs = [ctx.Process(target=_rank, args=(r, port, argv, codes[r])) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0] and [c.value for c in codes] == [0, 0]


pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def test_two_processes_equal_one(tmp_path, load_rows, capfd):
    two = tmp_path / "two"
    _two_processes([*ARGS, "--out", str(two), "--workers", "1"])
    assert capfd.readouterr().out.count("| candidate - baseline |") == 1  # rank 0 prints, rank 1 does not

    assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    # each rank wrote its shard: sample i on rank i % 2
    for rank in (0, 1):
        assert {r["index"] % 2 for r in load_rows(rank_file(two, rank))} == {rank}
    assert load_rows(two / "samples.jsonl") == load_rows(tmp_path / "one" / "samples.jsonl")
    assert (two / "summary.json").read_bytes() == (tmp_path / "one" / "summary.json").read_bytes()
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["samples"], summary["evaluated"]) == (21, 19)

    # rank 1's shard half lost: a single process finishes the folder
    path = rank_file(two, 1)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: len(lines) // 2]))
    (two / "summary.json").unlink()
    assert main([*ARGS, "--out", str(two)]) == 0
    assert load_rows(two / "samples.jsonl") == load_rows(tmp_path / "one" / "samples.jsonl")
    assert (two / "summary.json").read_bytes() == (tmp_path / "one" / "summary.json").read_bytes()
    assert rank_file(two, 0).read_bytes().count(b"\n") > 22  # the missing rows went to rank 0's file


def test_a_single_process_folder_resumes_on_two_balanced(tmp_path, load_rows):
    one, ref = tmp_path / "one", tmp_path / "ref"
    assert main([*ARGS, "--out", str(ref)]) == 0
    assert main([*ARGS, "--out", str(one)]) == 0
    path = rank_file(one, 0)
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:10]))  # samples 0-4 kept
    (one / "summary.json").unlink()
    _two_processes([*ARGS, "--out", str(one)])
    # the 16 samples left are dealt 8 and 8: rank 0 also takes its share
    assert len(load_rows(rank_file(one, 0))) == 10 + 16 and len(load_rows(rank_file(one, 1))) == 16
    assert load_rows(one / "samples.jsonl") == load_rows(ref / "samples.jsonl")
    assert (one / "summary.json").read_bytes() == (ref / "summary.json").read_bytes()
