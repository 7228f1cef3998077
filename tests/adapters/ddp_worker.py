"""Worker of test_distributed.py: one rank of a 2-process gloo run over every family."""
from __future__ import annotations

import os
from typing import Any, Dict

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from adapter_cases import CASES, CFG, build, train_batch
from sasp.adapters import wrap


def shard(batch: Dict[str, Any], i: int) -> Dict[str, Any]:
    """Image i of a training batch and its conversations (rows keep their padded length)."""
    lo, hi = int(batch["offset"][i]), int(batch["offset"][i + 1])
    out = dict(batch)
    for key in ("input_ids", "labels", "attention_masks"):
        out[key] = batch[key][lo:hi]
    for key in ("images", "images_clip"):
        out[key] = batch[key][i : i + 1]
    for key in ("masks_list", "label_list", "resize_list", "sam_mask_shape_list"):
        if key in batch:
            out[key] = batch[key][i : i + 1]
    out["offset"] = torch.tensor([0, hi - lo])
    return out


def mask_loss(out: Dict[str, Any], batch: Dict[str, Any]) -> torch.Tensor:
    """A loss that adds over masks: sum of per-mask mean BCE."""
    total = torch.zeros(())
    for pred, gt in zip(out["pred_masks"], batch["masks_list"]):
        if pred.shape[0]:
            bce = torch.nn.functional.binary_cross_entropy_with_logits(pred, gt, reduction="none")
            total = total + bce.flatten(1).mean(1).sum()
    return total


def run(rank: int, world: int, port: int, path: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = {}
        for case in CASES:
            model = build(case.family).train()
            ddp = wrap(DistributedDataParallel(model, find_unused_parameters=True), case.spec, CFG)
            batch = shard(train_batch(case), rank)
            mask_loss(ddp(**batch), batch).backward()
            result[case.family] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        if rank == 0:
            torch.save(result, path)
    finally:
        dist.destroy_process_group()
