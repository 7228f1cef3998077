"""A real third-party client: LISA's own model code, as PyPI's ``lisa-on-cuda`` ships it.

The test installs ``lisa-on-cuda`` with ``--no-deps`` into a temporary folder (it skips, with
the reason, when pip cannot fetch it, e.g. offline; set ``SASP_LISA_ON_CUDA`` to a folder that
already holds the installed package to skip the download), builds the real ``LISAForCausalLM``
with tiny random weights and wraps it with ``sasp.wrap_lisa``. LISA's source is never edited;
the fixture only works around what stands between that code and a CPU box with transformers 5:

- the package ``__init__`` files import web-demo dependencies: the model modules are imported
  under stub parent packages whose ``__init__`` never runs;
- LISA registers its config with ``AutoConfig`` as "llava", a name transformers 5 owns (it
  raises): the Auto* registrations are skipped during the import, which also keeps
  transformers' own "llava" intact for every other test;
- five ``.cuda()`` calls: ``Tensor.cuda`` is a no-op inside the fixture;
- N_p is hard-coded to 256: the tiny CLIP takes 224-px images with patch 14 and is saved to a
  temporary folder whose name contains "clip" (LISA's vision-tower builder checks that);
- SAM: ``build_sam_vit_h`` is replaced by a tiny SAM made of LISA's own fork classes;
- transformers >= 5 returns CLIP's wrong hidden layer from the second forward on unless its
  output-capturing hooks are installed on the LLM once after ``initialize_vision_modules``;
- with random weights ``evaluate`` emits [SEG] only when the other tokens are suppressed
  (``suppress_tokens`` and ``use_cache=False`` on the generation config).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import sasp
from sasp import SasPConfig, similarity, similarity_as_points, to_sam_frame

transformers = pytest.importorskip("transformers")

_TF = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
pytestmark = pytest.mark.skipif(
    _TF >= (5, 40), reason="LISA passes past_key_values=, which transformers 5.40 removes (pin transformers<5.40)"
)

PACKAGE = "lisa-on-cuda==1.4.14"
VOCAB, SEG = 64, 63
N_P, CLIP_PX, SAM_PX = 256, 224, 64
CFG = SasPConfig(num_points=8)


def _install(tmp: Path) -> Path:
    """The folder that holds the ``lisa_on_cuda`` package (installed there if need be)."""
    given = os.environ.get("SASP_LISA_ON_CUDA")
    if given:
        if not (Path(given) / "lisa_on_cuda" / "LISA.py").exists():
            pytest.skip(f"SASP_LISA_ON_CUDA={given} holds no lisa_on_cuda/LISA.py")
        return Path(given)
    target = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check", "--target", str(target), PACKAGE]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot install {PACKAGE}: {err}")
    if done.returncode != 0:
        pytest.skip(f"cannot install {PACKAGE} (pip install --no-deps failed, offline?): {done.stderr.strip()[-300:]}")
    return target


def _stub_packages(root: Path) -> None:
    """Parent packages whose ``__init__`` is never run; submodules load from their folders."""
    for name in ("lisa_on_cuda", "lisa_on_cuda.utils", "lisa_on_cuda.llava", "lisa_on_cuda.llava.model", "lisa_on_cuda.segment_anything"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(root.joinpath(*name.split(".")))]
        sys.modules[name] = mod


def _tiny_sam_builder(modeling):
    """``build_sam_vit_h`` stand-in: a tiny SAM from LISA's own fork classes."""

    def build(checkpoint=None):
        return modeling.Sam(
            image_encoder=modeling.ImageEncoderViT(
                depth=1, embed_dim=32, img_size=SAM_PX, mlp_ratio=2, num_heads=2, patch_size=16,
                qkv_bias=True, use_rel_pos=False, window_size=0, out_chans=16,
            ),
            prompt_encoder=modeling.PromptEncoder(
                embed_dim=16, image_embedding_size=(SAM_PX // 16, SAM_PX // 16), input_image_size=(SAM_PX, SAM_PX), mask_in_chans=4
            ),
            mask_decoder=modeling.MaskDecoder(
                num_multimask_outputs=3,
                transformer=modeling.TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32, num_heads=2),
                transformer_dim=16,
                iou_head_depth=3,
                iou_head_hidden_dim=16,
            ),
            pixel_mean=[0.0] * 3,
            pixel_std=[1.0] * 3,
        )

    return build


@pytest.fixture(scope="module")
def lisa_module(tmp_path_factory: pytest.TempPathFactory):
    """LISA's ``model/LISA.py`` module, imported from the installed ``lisa-on-cuda``."""
    root = _install(tmp_path_factory.mktemp("lisa_on_cuda"))
    saved = {k: v for k, v in sys.modules.items() if k == "lisa_on_cuda" or k.startswith("lisa_on_cuda.")}
    _stub_packages(root)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for cls in (transformers.AutoConfig, transformers.AutoModelForCausalLM):
                patch.setattr(cls, "register", staticmethod(lambda *args, **kwargs: None))
            modeling = importlib.import_module("lisa_on_cuda.segment_anything.modeling")
            sys.modules["lisa_on_cuda.segment_anything"].build_sam_vit_h = _tiny_sam_builder(modeling)
            lisa = importlib.import_module("lisa_on_cuda.LISA")
    except ImportError as err:
        pytest.skip(f"lisa-on-cuda's model code does not import here: {err}")
    yield lisa
    for k in [k for k in sys.modules if k == "lisa_on_cuda" or k.startswith("lisa_on_cuda.")]:
        del sys.modules[k]
    sys.modules.update(saved)


@pytest.fixture()
def cpu_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """LISA's ``.cuda()`` calls become no-ops on this CPU-only run."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


@pytest.fixture()
def lisa_model(lisa_module, cpu_cuda, tmp_path: Path):
    """The real ``LISAForCausalLM`` with tiny random weights, built as LISA's train script does."""
    torch.manual_seed(0)
    clip_dir = tmp_path / "tiny-clip-vit"
    clip_config = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=CLIP_PX, patch_size=14, projection_dim=16
    )
    transformers.CLIPVisionModel(clip_config).save_pretrained(clip_dir)
    transformers.CLIPImageProcessor(size={"shortest_edge": CLIP_PX}, crop_size={"height": CLIP_PX, "width": CLIP_PX}).save_pretrained(clip_dir)
    config = lisa_module.LlavaLlamaForCausalLM.config_class(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False,
    )
    config.mm_hidden_size = clip_config.hidden_size
    config.mm_vision_select_layer = -2
    model = lisa_module.LISAForCausalLM(
        config,
        seg_token_idx=SEG,
        vision_tower=str(clip_dir),
        train_mask_decoder=True,
        out_dim=16,
        ce_loss_weight=1.0,
        dice_loss_weight=0.5,
        bce_loss_weight=2.0,
        use_mm_start_end=False,
    )
    inner = model.get_model()
    inner.config.mm_vision_select_feature = "patch"
    inner.config.pretrain_mm_mlp_adapter = None
    inner.initialize_vision_modules(inner.config)
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # transformers 4.x
        pass
    else:
        maybe_install_capturing_hooks(inner)
    inner.initialize_lisa_modules(inner.config)
    model.generation_config.use_cache = False
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    assert model.get_model().get_vision_tower().num_patches == N_P
    return model


def _batch(seed: int = 0):
    """Two images of different sizes; image 0 has two conversations (one and two [SEG]),
    image 1 one conversation with one [SEG]."""
    gen = torch.Generator().manual_seed(seed)
    answers = [[7, SEG, 8], [SEG, 9, 10, SEG], [11, SEG]]
    length = 16
    ids, labels, attn = [], [], []
    for toks in answers:
        row = [1, 5, -200, 20, 21] + toks + [2]
        lab = [-100] * 5 + toks + [2]
        pad = length - len(row)
        ids.append(row + [0] * pad)
        labels.append(lab + [-100] * pad)
        attn.append([True] * len(row) + [False] * pad)
    sizes = [(48, 40), (30, 64)]
    resized = [(64, 53), (30, 64)]
    return {
        "images": torch.randn(2, 3, SAM_PX, SAM_PX, generator=gen),
        "images_clip": torch.randn(2, 3, CLIP_PX, CLIP_PX, generator=gen),
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_masks": torch.tensor(attn),
        "offset": torch.tensor([0, 2, 3]),
        "masks_list": [(torch.rand(3, 48, 40, generator=gen) > 0.5).float(), (torch.rand(1, 30, 64, generator=gen) > 0.5).float()],
        "label_list": [torch.zeros(h, w) for h, w in sizes],
        "resize_list": resized,
    }, sizes


def _expected(hidden, tokens, row_hw):
    """The points for every [SEG], row-major, from the core ops."""
    sims, hws = [], []
    for b, row in enumerate(tokens.tolist()):
        k = row.index(-200)
        for j, tok in enumerate(row):
            if tok == SEG and j > 0:
                q = j - 1
                sims.append(similarity(hidden[b, k : k + N_P], hidden[b, q + N_P - 1 if q >= k else q][None]))
                hws.append(list(row_hw[b]))
    refined, labels, _ = similarity_as_points(torch.cat(sims), hws, CFG.replace(crop_size=CLIP_PX))
    return to_sam_frame(refined, hws, SAM_PX), labels


class _Record:
    def __init__(self, model):
        self.hidden, self.calls = [], []
        inner = model.get_model()
        self.handles = [
            inner.text_hidden_fcs[0].register_forward_pre_hook(lambda m, a: self.hidden.append(a[0])),
            inner.visual_model.prompt_encoder.register_forward_hook(lambda m, a, k, o: self.calls.append(dict(k)), with_kwargs=True),
        ]

    def points(self):
        got = [c["points"] for c in self.calls if c.get("points") is not None]
        return torch.cat([p[0] for p in got]), torch.cat([p[1] for p in got])


def test_training_forward_backward(lisa_model) -> None:
    model = sasp.wrap_lisa(lisa_model, CFG)
    model.train()
    rec = _Record(model)
    batch, sizes = _batch()
    out = model(**batch)
    row_hw = [sizes[0], sizes[0], sizes[1]]
    want, want_labels = _expected(rec.hidden[0], batch["input_ids"], row_hw)
    got, got_labels = rec.points()
    assert got.shape == (4, CFG.num_points, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.equal(got_labels, want_labels)
    out["mask_loss"].backward()
    grads = [p.grad for p in model.get_model().layers.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert torch.isfinite(out["loss"])


def test_evaluate(lisa_model) -> None:
    model = sasp.wrap_lisa(lisa_model, CFG)
    model.eval()
    model.generation_config.suppress_tokens = [t for t in range(VOCAB) if t != SEG]
    rec = _Record(model)
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.tensor([[1, 5, -200, 20, 21, 22], [1, 5, -200, 23, SEG, 24]])
    sizes = [(48, 40), (30, 64)]
    output_ids, pred_masks = model.evaluate(
        torch.randn(2, 3, CLIP_PX, CLIP_PX, generator=gen),
        torch.randn(2, 3, SAM_PX, SAM_PX, generator=gen),
        input_ids,
        resize_list=[(64, 53), (30, 64)],
        original_size_list=sizes,
        max_new_tokens=2,
    )
    assert (output_ids[:, -2:] == SEG).all()
    want, want_labels = _expected(rec.hidden[0], output_ids, sizes)
    got, got_labels = rec.points()
    assert got.shape[0] == 5
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.equal(got_labels, want_labels)
    assert [m.shape for m in pred_masks] == [(2, 48, 40), (3, 30, 64)]
    sasp.unwrap(model)
    with torch.no_grad():
        again = model.evaluate(
            torch.randn(2, 3, CLIP_PX, CLIP_PX, generator=gen.manual_seed(1)),
            torch.randn(2, 3, SAM_PX, SAM_PX, generator=gen),
            input_ids, resize_list=[(64, 53), (30, 64)], original_size_list=sizes, max_new_tokens=2,
        )
    assert all(c.get("points") is None for c in rec.calls[2:])
    assert torch.equal(again[0], output_ids)
