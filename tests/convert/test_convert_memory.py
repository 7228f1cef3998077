"""Streaming: converting a multi-shard checkpoint holds about one shard at a time.

A fresh interpreter (whose heap never held the weights) converts an 8-shard fp16 LISA-layout
folder while sampling its resident set size (``measure_memory.py``); loading every shard at once
would raise the peak by the whole checkpoint, several times the bound checked here.
"""
from __future__ import annotations

import measure_memory


def test_peak_memory_is_about_one_shard(tmp_path) -> None:
    measure_memory.write(hidden=512, layers=8, shards=8, root=tmp_path, vocab=4000)
    r = measure_memory.run_child(tmp_path)
    assert r["shards"] >= 6 and r["output_bytes"] >= r["source_bytes"]
    assert r["peak_growth_bytes"] < 2 * r["largest_shard_bytes"], r
    assert r["peak_growth_bytes"] < 0.4 * r["source_bytes"], r
