"""``SegTrainer``: transformers' ``Trainer`` for SegLlava's LISA losses.

What it adds to ``Trainer`` (accelerate underneath, so torchrun, ``accelerate launch`` and a
DeepSpeed config work unchanged):

- the loss is the model's own (``ce + bce + dice``, LISA's weights), a mean over the
  micro-batch that ``Trainer`` divides by the gradient-accumulation steps; ``num_items_in_batch``
  is not passed to the model (its CE is a per-micro-batch token mean, as in LISA);
- ``ce``, ``bce`` and ``dice`` (weighted, so they add up to ``loss``) are logged next to
  ``loss``, averaged over the micro-batches and processes since the last log;
- ``gt_masks`` (a list of per-row tensors) and ``sample_ids`` (a list of str) travel through
  ``_prepare_inputs``; ``sample_ids`` is removed before the forward and appended to
  ``<output_dir>/data_order/rank<r>.jsonl`` (which samples each optimizer step saw);
- every checkpoint (and ``save_model``) gets ``sasp_run.json``: the run configuration given
  at construction (arm, SasP settings, data, seeds, command line), the model configuration,
  the training arguments and the versions.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import platform
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer

RUN_CONFIG_NAME = "sasp_run.json"
DATA_ORDER_DIR = "data_order"


def _versions() -> Dict[str, str]:
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import sasp

        out["sasp"] = sasp.__version__
    except AttributeError:  # pragma: no cover - a partial install
        pass
    try:
        import peft

        out["peft"] = peft.__version__
    except ImportError:
        pass
    return out


def jsonable(obj: Any) -> Any:
    """``json.dumps`` default: dataclasses, tuples, torch dtypes, paths -> plain values."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def load_run_config(checkpoint: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The ``sasp_run.json`` saved with a checkpoint (or an output folder)."""
    path = os.path.join(os.fspath(checkpoint), RUN_CONFIG_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"{checkpoint} has no {RUN_CONFIG_NAME}: not a checkpoint written by sasp train")
    with open(path) as f:
        return json.load(f)


def core_model(model: nn.Module) -> nn.Module:
    """The SegLlava below DDP / DeepSpeed (``.module``) and PEFT (``.base_model.model``)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    base = getattr(model, "base_model", None)
    if base is not None and base is not model and isinstance(getattr(base, "model", None), nn.Module):
        return base.model
    return model


class SegTrainer(Trainer):
    """``Trainer`` for ``SegLlavaForCausalLM`` batches from ``SegCollator``.

    Args:
        *args, **kwargs: ``Trainer``'s (model, args, train_dataset, data_collator,
            processing_class, callbacks, ...). Use ``TrainingArguments(remove_unused_columns=
            False)``: the batches are built by the collator, not from dataset columns.
        run_config: what identifies the run beyond the model and training arguments (arm,
            SasP settings, data fingerprints, seeds, command line); saved with each
            checkpoint in ``sasp_run.json``.
        record_data_order: append the sample ids of every micro-batch to
            ``<output_dir>/data_order/rank<r>.jsonl``.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, run_config: Optional[Dict[str, Any]] = None, record_data_order: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns:
            raise ValueError("SegTrainer needs TrainingArguments(remove_unused_columns=False): batches come from the collator")
        self.model_accepts_loss_kwargs = False  # the model's losses are micro-batch means (LISA's)
        self.run_config: Dict[str, Any] = dict(run_config or {})
        self.record_data_order = record_data_order
        self._parts: Optional[Tensor] = None  # [4]: summed ce, bce, dice, micro-batch count

    # -- loss ----------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: Dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Optional[Union[Tensor, int]] = None,
    ) -> Union[Tensor, Tuple[Tensor, Any]]:
        """The model's LISA loss for one micro-batch; records its parts and sample ids."""
        ids = inputs.pop("sample_ids", None)
        if ids is not None and model.training and self.record_data_order:
            self._write_data_order(ids)
        outputs = model(**inputs)
        loss = outputs.loss
        if loss is None:
            raise ValueError("the model returned no loss: the batch needs labels and gt_masks (use SegCollator)")
        if model.training:
            zero = loss.new_zeros(())
            parts = [outputs.ce_loss, outputs.mask_bce_loss, outputs.mask_dice_loss]
            row = torch.stack([(p if p is not None else zero).detach().float() for p in parts] + [zero.float() + 1])
            self._parts = row if self._parts is None else self._parts + row
        return (loss, outputs) if return_outputs else loss

    def prediction_step(
        self, model: nn.Module, inputs: Dict[str, Any], prediction_loss_only: bool, ignore_keys: Optional[List[str]] = None
    ) -> Tuple[Optional[Tensor], None, None]:
        """Evaluation loss only (masks of varying sizes do not concatenate across batches;
        segmentation quality is measured by ``sasp.train.validation``)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # -- logging -------------------------------------------------------------------------

    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        if "loss" in logs and self._parts is not None:
            parts = self._parts
            if self.accelerator.num_processes > 1:
                parts = self.accelerator.reduce(parts.to(self.accelerator.device), reduction="sum")
            ce, bce, dice, n = parts.tolist()
            if n > 0:
                logs.update(ce=ce / n, bce=bce / n, dice=dice / n)
            self._parts = None
        super().log(logs, start_time)

    def _write_data_order(self, ids: List[str]) -> None:
        folder = os.path.join(self.args.output_dir, DATA_ORDER_DIR)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"rank{self.args.process_index}.jsonl"), "a") as f:
            f.write(json.dumps({"step": self.state.global_step, "ids": list(ids)}) + "\n")

    # -- saving --------------------------------------------------------------------------

    def run_record(self) -> Dict[str, Any]:
        """Everything ``sasp_run.json`` holds."""
        core = core_model(self.model)
        record = dict(self.run_config)
        config = getattr(core, "config", None)
        record["model_config"] = config.to_dict() if config is not None else None
        record["training_args"] = self.args.to_dict()
        record["global_step"] = self.state.global_step
        record["world_size"] = self.args.world_size
        record["versions"] = _versions()
        return record

    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[Dict[str, Tensor]] = None) -> None:
        # transformers >= 5 writes LLaVA checkpoints in the legacy key layout by default, which
        # Trainer's resume (a plain load_state_dict) cannot read back: keep the module names
        target = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        keep_names = isinstance(target, PreTrainedModel) and "save_original_format" in inspect.signature(target.save_pretrained).parameters
        if keep_names:
            target.save_pretrained = functools.partial(type(target).save_pretrained, target, save_original_format=False)
        try:
            super()._save(output_dir, state_dict=state_dict)
        finally:
            if keep_names:
                del target.save_pretrained
        if self.args.should_save:
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            with open(os.path.join(output_dir, RUN_CONFIG_NAME), "w") as f:
                json.dump(self.run_record(), f, indent=2, sort_keys=True, default=jsonable)
