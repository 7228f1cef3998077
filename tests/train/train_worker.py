"""One training run of the tiny model on ``Rects``: imported by the tests, or run as a script
(alone, under torchrun, or killed mid-run with ``--kill-at``)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Optional

import torch
from transformers import TrainerCallback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_cases import Rects, training_args  # noqa: E402


class KillAt(TrainerCallback):
    """SIGKILL this process when optimizer step ``step`` has finished (no clean-up at all)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def train(
    out: str,
    max_steps: int,
    batch_size: int = 2,
    n: int = 8,
    save_steps: Optional[int] = None,
    sasp: Optional[str] = None,
    seed: int = 0,
    lr: float = 1e-3,
    resume: Optional[str] = None,
    kill_at: Optional[int] = None,
    workers: int = 0,
    ddp: bool = False,
):
    """Build the tiny model (seed ``seed``, arm ``sasp``: None or a preset name), train it on
    ``Rects(n)`` and return the trainer."""
    from sasp.train.collator import SegCollator
    from sasp.train.model import build_model, configure_trainable, resolve_sasp, set_arm
    from sasp.train.trainer import SegTrainer

    cfg = resolve_sasp(sasp)
    model, processor = build_model("tiny", seed=seed)
    set_arm(model, cfg)
    configure_trainable(model)
    extra = {"ddp_backend": "gloo"} if ddp else {}
    save = {"save_strategy": "steps", "save_steps": save_steps} if save_steps else {}
    args = training_args(out, per_device_train_batch_size=batch_size, max_steps=max_steps, learning_rate=lr,
                         seed=seed, dataloader_num_workers=workers, **save, **extra)
    trainer = SegTrainer(
        model=model, args=args, train_dataset=Rects(n), data_collator=SegCollator(processor), processing_class=processor,
        callbacks=[KillAt(kill_at)] if kill_at is not None else None,
        run_config={"arm": "baseline" if cfg is None else "sasp", "sasp": cfg, "seed": seed, "data": Rects(n).fingerprint()},
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--max-steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--save-steps", type=int)
    p.add_argument("--kill-at", type=int)
    p.add_argument("--params", help="rank 0 saves the final parameters here")
    a = p.parse_args()
    torch.set_num_threads(1)
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    trainer = train(a.out, a.max_steps, a.batch_size, a.samples, a.save_steps, kill_at=a.kill_at, ddp=ddp)
    if a.params and trainer.args.process_index == 0:
        torch.save({k: v.detach().clone() for k, v in trainer.model.named_parameters()}, a.params)


if __name__ == "__main__":
    main()
