"""The test doubles themselves (``sasp.testing``): the fork's SAM at its tiny sizes, bad input."""
from __future__ import annotations

import pytest
import torch

testing = pytest.importorskip("sasp.testing", reason="needs transformers and segment_anything")


def test_tiny_sam_is_the_fork_at_tiny_sizes() -> None:
    from segment_anything.modeling import PromptEncoder

    torch.manual_seed(0)
    sam = testing.tiny_sam()
    enc = sam.prompt_encoder
    assert type(enc) is testing.TextPromptEncoder
    assert enc.embed_dim == 16 and enc.input_image_size == (64, 64) and enc.image_embedding_size == (4, 4)
    assert len(sam.image_encoder.blocks) == 1 and sam.image_encoder.blocks[0].window_size == 0
    assert not sam.image_encoder.blocks[0].attn.use_rel_pos
    assert torch.equal(sam.pixel_mean.flatten(), torch.zeros(3)) and torch.equal(sam.pixel_std.flatten(), torch.ones(3))
    with torch.no_grad():
        assert sam.image_encoder(torch.randn(1, 3, 64, 64)).shape == (1, 16, 4, 4)
    assert type(testing.tiny_sam(text_prompts=False).prompt_encoder) is PromptEncoder

    coords, labels = torch.rand(2, 3, 2) * 64, torch.ones(2, 3, dtype=torch.long)
    text = torch.randn(2, 1, 16)
    with torch.no_grad():
        sparse, dense = enc(points=(coords, labels), boxes=None, masks=None, text_embeds=text)
        plain, _ = PromptEncoder.forward(enc, points=(coords, labels), boxes=None, masks=None)
    assert sparse.shape == (2, 3 + 1 + 1, 16) and dense.shape == (2, 16, 4, 4)
    assert torch.equal(sparse[:, :-1], plain) and torch.equal(sparse[:, -1:], text)  # text after the points


def test_bad_family_raises() -> None:
    with pytest.raises(ValueError, match="unknown family 'lisa2'"):
        testing.build_tiny("lisa2")
    with pytest.raises(ValueError, match="unknown family"):
        testing.make_batch("lisa2", [(8, 8)], [[[testing.SEG]]])
    with pytest.raises(ValueError, match="2 image sizes for 1 prompts"):
        testing.make_eval_batch("lisa", [(8, 8), (9, 9)], [[7]])
