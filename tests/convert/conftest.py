"""Fixtures: the real tiny LISA (``lisa-on-cuda``) saved as LISA's merge script does, and its
conversion. ``sys.path`` gets this folder so the helper modules import by name."""
from __future__ import annotations

import os
import sys
import types

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

transformers = pytest.importorskip("transformers")
pytest.importorskip("segment_anything")

import lisa_real  # noqa: E402


@pytest.fixture(scope="module")
def lisa_case(tmp_path_factory: pytest.TempPathFactory):
    """A namespace: LISA's modules (``mods``), the real ``lisa`` model, its tokenizer ``tok``,
    the merged folder ``src`` (4 .bin shards), the converted folder ``dst``, our model ``ours``
    loaded from it (``info``: the load report) and its processor ``proc``; ``V`` is LISA's
    vocabulary size, ``image_id`` / ``seg_id`` the token ids."""
    version = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
    if version >= (5, 40):
        pytest.skip("LISA passes past_key_values=, which transformers 5.40 removes")
    tmp = tmp_path_factory.mktemp("lisa_convert")
    try:
        root = lisa_real.install_root(tmp)
    except RuntimeError as err:
        pytest.skip(str(err))
    from sasp.convert import convert_checkpoint
    from sasp.models.seg_llava.modeling_seg_llava import SegLlavaForCausalLM
    from sasp.models.seg_llava.processing_seg_llava import SegLlavaProcessor

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)  # LISA's .cuda() calls on a CPU box
        try:
            ctx = lisa_real.lisa_modules(root)
            mods = ctx.__enter__()
        except ImportError as err:
            pytest.skip(f"lisa-on-cuda's model code does not import here: {err}")
        try:
            tok = lisa_real.build_tokenizer()
            seg_id = tok.convert_tokens_to_ids("[SEG]")
            lisa, clip_dir = lisa_real.build_lisa(mods, tmp, len(tok), seg_id)
            src, dst = tmp / "LISA-tiny", tmp / "seg-llava-tiny"
            shards = lisa_real.save_like_merge_script(lisa, tok, src, shards=4)
            result = convert_checkpoint(src, dst, sam_config=lisa_real.TINY_LISA_SAM)
            ours, info = SegLlavaForCausalLM.from_pretrained(dst, output_loading_info=True)
            yield types.SimpleNamespace(
                mods=mods, lisa=lisa, tok=tok, src=src, dst=dst, shards=shards, result=result, ours=ours.eval(), info=info,
                proc=SegLlavaProcessor.from_pretrained(dst), clip_dir=clip_dir, V=len(tok), seg_id=seg_id,
                image_id=int(ours.config.image_token_id),
            )
        finally:
            ctx.__exit__(None, None, None)
