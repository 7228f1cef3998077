"""Peak memory of ``convert_checkpoint`` on a multi-shard LISA-layout checkpoint.

    python tests/convert/measure_memory.py --hidden 1024 --layers 12 --shards 8

Writes a fake LISA folder (fp16 weights, ``--shards`` .bin shards, the tower in its own folder);
then a fresh process (whose heap never held the weights) converts a small folder once to import
everything and converts the big one while a thread samples its resident set size every 2 ms. Prints one JSON line: total source bytes, the largest
shard, the RSS before the conversion and its peak growth during it (RSS counts the source
shard's pages while it is memory-mapped, the output shard's tensors and Python's own heap;
tracemalloc would miss torch's allocations, which bypass Python's allocator).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write(hidden: int, layers: int, shards: int, root: Path, vocab: int = 16000) -> None:
    """The small warm-up folder, the tower and the big fp16 checkpoint under ``root``."""
    import torch

    import fakes

    tok = fakes.family_tokenizer("lisa")
    tower = str(fakes.write_clip_folder(root / "clip-tower"))
    fakes.write_folder(root / "small", fakes.family_state("lisa", len(tok)), fakes.family_config("lisa", len(tok), tower), tok, shards=2)
    state = fakes.family_state("lisa", vocab, hidden=hidden, layers=layers, dtype=torch.float16)
    config = fakes.family_config("lisa", vocab, tower, hidden=hidden, layers=layers, dtype="float16")
    fakes.write_folder(root / "big", state, config, tok, shards=shards)


def run_child(root: Path) -> dict:
    """``measure(root)`` in a fresh interpreter; its JSON result."""
    done = subprocess.run([sys.executable, __file__, "--measure", str(root)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["measure failed"])[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(root: Path) -> dict:
    """Run in a fresh process: warm up on the small folder, then convert the big one."""
    import fakes
    from sasp.convert import convert_checkpoint

    sam = fakes.tiny_sam_config()
    convert_checkpoint(root / "small", root / "small-out", sam_config=sam)  # imports and caches everything once
    files = sorted((root / "big").glob("*.bin"))
    total, largest = sum(f.stat().st_size for f in files), max(f.stat().st_size for f in files)
    before = _rss()
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    convert_checkpoint(root / "big", root / "big-out", sam_config=sam)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    out = sum(f.stat().st_size for f in (root / "big-out").glob("*.safetensors"))
    return {"source_bytes": total, "shards": len(files), "largest_shard_bytes": largest, "output_bytes": out,
            "rss_before": before, "peak_growth_bytes": peak[0] - before,
            "growth_over_total": round((peak[0] - before) / total, 3),
            "growth_over_largest_shard": round((peak[0] - before) / largest, 3), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--measure", metavar="ROOT", help=argparse.SUPPRESS)  # the fresh child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write(args.hidden, args.layers, args.shards, Path(tmp))
        print(json.dumps(run_child(Path(tmp))))


if __name__ == "__main__":
    main()
