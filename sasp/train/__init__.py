"""``sasp train``: fine-tune a SegLlava <SEG> model, baseline or SasP arm, on transformers' ``Trainer``.

Pieces (each usable alone): ``SegCollator`` (Samples -> LISA's training batch), ``SegTrainer``
(LISA's loss, ce / bce / dice logged, ``sasp_run.json`` in every checkpoint),
``build_model`` / ``set_arm`` / ``configure_trainable`` / ``apply_lora`` (what trains, which
arm), ``evaluate_giou`` / ``GIoUCallback`` (LISA's teacher-forced validation) and the command
(``sasp train``, ``python -m sasp train``; ``torchrun`` / ``accelerate launch -m sasp train`` run
the same).

Recipe: a real LISA checkpoint on ReasonSeg, baseline vs SasP
==============================================================

1. Install: ``pip install "sasp[train]" deepspeed`` on a machine with GPUs (bf16: Ampere or
   newer).

2. Model: a seg_llava folder. Either a released LISA checkpoint converted to seg_llava
   (``sasp convert``), or LISA's own starting point, a LLaVA-1.5 folder in transformers'
   format (e.g. ``llava-hf/llava-1.5-7b-hf``) plus SAM ViT-H (``sam_vit_h_4b8939.pth``):
   ``--model ./llava-1.5-7b-hf --sam-checkpoint ./sam_vit_h_4b8939.pth`` adds [SEG], SAM and
   a fresh [SEG] projection (initialised from ``--seed``, identically in both arms).

3. Data: LISA's ReasonSeg release unpacked so that ``./dataset/reason_seg/ReasonSeg/{train,
   val,test}/*.jpg|*.json`` exist; ``--data reasonseg --root ./dataset/reason_seg/ReasonSeg``.
   Each query trains towards "Sure, [SEG]." and the query's mask (ignore regions count as
   background, as in LISA). ``--data-arg all_queries=true`` uses every text of an image.

4. DeepSpeed ZeRO-2, as LISA (``ds_zero2.json``; "auto" takes the values from the command)::

       {"bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
        "zero_optimization": {"stage": 2, "contiguous_gradients": true, "overlap_comm": true,
                              "reduce_scatter": true, "reduce_bucket_size": 5e8,
                              "allgather_bucket_size": 5e8},
        "gradient_clipping": "auto", "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto"}

5. Train both arms with LISA's settings (LoRA r=8 / alpha 16 / dropout 0.05 on q_proj and
   v_proj; AdamW lr 3e-4, betas (0.9, 0.95), no weight decay, 100 warm-up steps then linear
   decay, clipping 1.0; 2 samples per GPU x 10 accumulation steps; bf16). Same ``--seed``:
   same new-module initialisation and same data order in both arms::

       COMMON="--model ./lisa-7b --data reasonseg --root ./dataset/reason_seg/ReasonSeg
         --split train --lora-r 8 --lora-alpha 16 --lora-dropout 0.05 --lr 3e-4
         --warmup-steps 100 --batch-size 2 --grad-accum 10 --max-steps 500 --save-steps 100
         --bf16 --deepspeed ds_zero2.json --seed 0 --workers 4
         --val-data reasonseg --val-split val --eval-steps 100"
       torchrun --nproc-per-node 8 -m sasp train $COMMON --arm baseline --out runs/rs-base
       torchrun --nproc-per-node 8 -m sasp train $COMMON --arm sasp --sasp-preset read-7b \\
           --out runs/rs-sasp

   (``--sasp-preset read-13b`` for a 13B model; ``--num-points``, ``--t-pos``, ``--t-neg``,
   ``--down-sample`` override single fields.) Logs carry ``loss`` and its parts ``ce``,
   ``bce``, ``dice``; ``<out>/val_curve.json`` the teacher-forced val gIoU / cIoU every
   ``--eval-steps`` (computed on rank 0 while the others wait; keep ZeRO-2, not ZeRO-3, when
   validating during training). A killed job continues with the same command plus
   ``--resume auto``; a checkpoint of another run (arm, SasP settings, data, seed, LoRA,
   model) is refused.

6. Outputs: ``<out>/checkpoint-N/`` (adapter + mask decoder + projection + embeddings with
   LoRA, or the full model; optimizer, scheduler, RNG and ``sasp_run.json``), ``<out>/``
   (final), and with LoRA ``<out>/merged/``: a plain seg_llava folder whose ``config.sasp``
   is the arm it was trained in.

7. Compare the two merged models on ReasonSeg val and test with ``sasp compare`` (generation,
   paired bootstrap intervals), each in the arm it was trained in.

Full fine-tuning (``--lora-r 0``, the default) trains the whole LLM instead of adapters;
``--train-vision-tower`` / ``--train-projector`` unfreeze the CLIP side (LISA freezes both).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_ANSWER": "collator",
    "IGNORE_LABEL": "collator",
    "SegCollator": "collator",
    "LoraSettings": "model",
    "TrainableSettings": "model",
    "apply_lora": "model",
    "arm_name": "model",
    "build_model": "model",
    "configure_trainable": "model",
    "resolve_sasp": "model",
    "set_arm": "model",
    "RUN_CONFIG_NAME": "trainer",
    "SegTrainer": "trainer",
    "load_run_config": "trainer",
    "GIoUCallback": "validation",
    "evaluate_giou": "validation",
    "trivial_scores": "validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Lazy exports: ``import sasp.train`` (and ``sasp train --help``) imports no transformers."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module != "collator":
        try:
            import transformers  # noqa: F401
        except ImportError as err:
            raise ImportError(f"sasp.train.{name} needs transformers and accelerate: pip install \"sasp[train]\"") from err
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
