"""A tiny random ``SegLlavaForCausalLM`` built offline: same code paths as a full-size model.

Used by the tests, the demo and the synthetic-task experiment. Its word-level tokenizer knows
the demo's words and every word the synthetic task (``sasp.data.synthetic``) can emit.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple, Union

import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaProcessor, PreTrainedTokenizerFast

from sasp.config import SasPConfig

from .configuration_seg_llava import SegLlavaConfig
from .modeling_seg_llava import SegLlavaForCausalLM
from .processing_seg_llava import IMAGE_TOKEN, SEG_TOKEN, SegLlavaProcessor
from .sam import TINY_SAM_CONFIG
from .sam_backends import get_backend

_WORDS = (
    "user assistant sure it is the a an of in on at to and or not no yes there here "
    "please segment find show where what which object objects image picture red green blue "
    "yellow white black circle square box cat dog person car left right top bottom center "
    "middle big small one two that this can you , . ? ! :"
).split()


def tiny_vocabulary() -> Tuple[str, ...]:
    """The tiny tokenizer's words: the demo's plus the synthetic task's, sorted, no specials."""
    words = set(_WORDS)
    try:
        from sasp.data.synthetic import VOCABULARY

        words.update(w.lower() for w in VOCABULARY if w != SEG_TOKEN)
    except ImportError:  # pragma: no cover - the synthetic task ships with sasp
        pass
    return tuple(sorted(words))


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in code (no download): lower-cased words and punctuation,
    unknown words -> ``<unk>``, special tokens ``<s> </s> <pad> <image> [SEG]``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    specials = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, SEG_TOKEN]
    vocab = {w: i for i, w in enumerate(specials + [w for w in tiny_vocabulary() if w not in specials])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##")
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left"
    )


def build_tiny(
    seed: int = 0,
    image_size: int = 168,
    patch_size: int = 14,
    hidden_size: int = 64,
    max_context: int = 512,
    sam_config: Optional[Mapping[str, Any]] = None,
    sasp: Union[None, SasPConfig, Mapping[str, Any]] = None,
    sam_prompt: str = "both",
    num_layers: int = 2,
) -> Tuple[SegLlavaForCausalLM, SegLlavaProcessor]:
    """A tiny random model and its processor, built offline in about a second.

    CLIP ViT (2 layers, 32 wide, 168 px / 14 px patches: a 12 x 12 token grid), Llama
    (``num_layers`` layers, ``hidden_size`` wide), SAM with the stock classes at 256 px
    (``TINY_SAM_CONFIG``). ``sasp`` None builds the baseline; the weights depend on ``seed``
    only, so both arms start identical.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        tok = build_tiny_tokenizer()
        vision = CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch_size, projection_dim=32,
        )
        text = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_context,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        sam_config = dict(sam_config or TINY_SAM_CONFIG)
        config = SegLlavaConfig(
            vision_config=vision, text_config=text,
            image_token_index=int(tok.convert_tokens_to_ids(IMAGE_TOKEN)),
            image_seq_length=(image_size // patch_size) ** 2,
            seg_token_id=int(tok.convert_tokens_to_ids(SEG_TOKEN)),
            sam_config=sam_config, out_dim=get_backend(sam_config).config_prompt_width(sam_config),
            sasp=sasp, sam_prompt=sam_prompt,
        )
        model = SegLlavaForCausalLM(config).eval()
    finally:
        torch.random.set_rng_state(state)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    llava_processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    sam_size = model.sam_backend.input_size(model.visual_model)
    return model, SegLlavaProcessor(llava_processor, sam_image_size=sam_size, sam_backend=model.sam_backend.name)
