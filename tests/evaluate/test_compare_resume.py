"""A compare run killed with SIGKILL half-way and started again equals an uninterrupted run."""
import json
import signal
import subprocess
import time

from sasp.cli import main
from sasp.evaluate.rows import rank_file

ARGS = ["compare", "--data", "toy", "--data-arg", "n=24", "--data-arg", "no_target=[4]", "--data-arg", "missing=[9]",
        "--arms", "toy", "--arm-arg", "fail=[13]", "--resamples", "300", "--no-plot", "--quiet"]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, python, subprocess_env, load_rows):
    out = tmp_path / "killed"
    cmd = [python, "-m", "sasp", *ARGS, "--out", str(out), "--arm-arg", "sleep=0.05"]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rows = rank_file(out, 0)
    deadline = time.monotonic() + 120
    try:
        while not (rows.exists() and rows.read_bytes().count(b"\n") >= 12):
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "no rows written"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    written = rows.read_bytes().count(b"\n")
    assert 12 <= written < 48, written  # killed half-way
    assert not (out / "summary.json").exists()

    # a partial last line, as a kill inside a write leaves it
    with open(rows, "ab") as f:
        f.write(b'{"id": "toy/99", "index": 9')
    assert main([*ARGS, "--out", str(out)]) == 0
    assert main([*ARGS, "--out", str(tmp_path / "straight")]) == 0

    resumed = load_rows(out / "samples.jsonl")
    straight = load_rows(tmp_path / "straight" / "samples.jsonl")
    assert len(resumed) == 48 and len({(r["index"], r["arm"]) for r in resumed}) == 48
    assert resumed == straight
    assert (out / "summary.json").read_bytes() == (tmp_path / "straight" / "summary.json").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["evaluated"], summary["excluded"], summary["candidate"]["errors"]) == (22, 2, 2)
