"""``import sasp`` stays light: torch, numpy and einops only; adapters load on first use."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("transformers", "segment_anything", "peft", "triton")

SCRIPT = f"""
import sys
import sasp
heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]
assert not heavy, heavy
assert 'sasp.adapters' not in sys.modules
from sasp import wrap_lisa, wrap_gsva, wrap_sesame, wrap, unwrap, disabled, SegPipelineSpec
heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]
assert not heavy, heavy
assert wrap_lisa.__module__ == 'sasp.adapters.lisa'
print('ok')
"""


def test_import_sasp_is_light() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
