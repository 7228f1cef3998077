"""Retrofit a LISA model with SasP: the lines a LISA user adds to their scripts.

    python examples/retrofit_lisa.py      # runs those lines on a tiny random LISA (CPU, seconds)

The tiny LISA is ``sasp.testing``'s test double (LISA's forward structure, random weights);
with a real LISA, replace ``build_tiny`` / ``make_batch`` by LISA's own model and data loader.

LISA's ``train_ds.py``, after the model is built (before or after ``get_peft_model`` and
``deepspeed.initialize``, both are reached through)::

    import sasp
    model = sasp.wrap_lisa(model, sasp.READ_7B)     # hooks only: state_dict keys unchanged

Checkpoints saved from the wrapped model load into an unwrapped LISA and vice versa; training
then sends the mask loss through SasP's points (DtoC) into the LLM as well.

LISA's ``chat.py`` / evaluation, after loading::

    model = sasp.wrap_lisa(model)
    output_ids, pred_masks = model.evaluate(...)    # SAM gets the points and the [SEG] embedding
    with sasp.disabled(model):                      # the original LISA, e.g. for an A/B check
        output_ids, pred_masks = model.evaluate(...)
    sasp.unwrap(model)                              # back to bit-identical LISA
"""
from __future__ import annotations

import torch

import sasp
from sasp.testing import SEG, allow_only, build_tiny, make_batch, make_eval_batch


def main() -> None:
    torch.manual_seed(0)
    model = build_tiny("lisa")  # stands in for LISAForCausalLM.from_pretrained(...)

    # --- training script -------------------------------------------------------------------
    model = sasp.wrap_lisa(model, sasp.READ_7B.replace(num_points=6))  # K=6 for the tiny 8x8 grid
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    batch = make_batch("lisa", [(48, 40), (30, 64)], [[[7, SEG, 8], [SEG, 9, SEG]], [[11, SEG]]])
    for step in range(3):
        out = model(**batch)  # LISA's model_forward, unchanged
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}: loss {out['loss'].item():.4f} (mask {out['mask_loss'].item():.4f})")

    # --- inference script ------------------------------------------------------------------
    model.eval()
    allow_only(model, [SEG])  # random weights: make generation say [SEG]
    eval_batch = make_eval_batch("lisa", [(48, 40), (30, 64)], [[7, 8], [9, 10]], max_new_tokens=2)
    output_ids, masks = model.evaluate(**eval_batch)
    with sasp.disabled(model):
        _, masks_text_only = model.evaluate(**eval_batch)
    changed = [(m > 0).ne(t > 0).float().mean().item() for m, t in zip(masks, masks_text_only)]
    print(f"evaluate: {[tuple(m.shape) for m in masks]}; mask pixels changed by SasP: {[f'{c:.1%}' for c in changed]}")

    sasp.unwrap(model)
    _, masks_unwrapped = model.evaluate(**eval_batch)
    assert all(torch.equal(a, b) for a, b in zip(masks_unwrapped, masks_text_only))
    print("unwrapped: identical to the original LISA")


if __name__ == "__main__":
    main()
