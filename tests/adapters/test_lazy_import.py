"""``import sasp, sasp.adapters`` stays light (torch, numpy, sasp's core); the test doubles in
``sasp.testing`` bring transformers and segment_anything but never sasp's own model."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("transformers", "segment_anything", "peft", "triton", "matplotlib", "PIL", "pycocotools")  # torch itself imports tqdm

LIGHT = f"""
import sys
import sasp
heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]
assert not heavy, heavy
assert 'sasp.adapters' not in sys.modules
from sasp import wrap_lisa, wrap_gsva, wrap_sesame, wrap, unwrap, disabled, SegPipelineSpec
import sasp.adapters
from sasp.adapters import (
    GSVA_SPEC, LISA_SPEC, SESAME_SPEC, CallContext, config_of, is_wrapped, wrap_gsva, wrap_lisa, wrap_sesame,
)
heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]
assert not heavy, heavy
assert not [m for m in sys.modules if m.startswith(('sasp.models', 'sasp.testing'))]
assert wrap_lisa.__module__ == 'sasp.adapters.lisa'
print('ok')
"""

DOUBLES = """
import sys
import sasp.testing
assert 'transformers' in sys.modules and 'segment_anything' in sys.modules
ours = [m for m in sys.modules if m.startswith('sasp.models.seg_llava.') and m.rsplit('.', 1)[1] not in ('sam', 'losses')]
assert not ours, ours
print('ok')
"""


def _run(script: str) -> None:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_import_sasp_is_light() -> None:
    _run(LIGHT)


def test_testing_doubles_leave_our_model_alone() -> None:
    _run(DOUBLES)
