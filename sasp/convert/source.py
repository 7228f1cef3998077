"""Reading a transformers checkpoint folder one weight file at a time.

A folder has ``config.json`` and either an index (``model.safetensors.index.json`` or
``pytorch_model.bin.index.json``, what ``save_pretrained`` writes when it shards) naming its shard
files, or one ``model.safetensors`` / ``pytorch_model.bin``. ``open_checkpoint`` lists every
tensor's name, shape and file from the file headers (``torch.load(mmap=True)`` reads a .bin's
pickle without its data), so that a whole conversion is checked before anything is written;
``read_tensors`` then streams one file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

import torch

from .keys import ConversionError, brief

INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and its shape (dtype as written, e.g. "torch.bfloat16")."""

    file: str
    shape: Tuple[int, ...]
    dtype: str


@dataclass
class Checkpoint:
    """A checkpoint folder: its raw ``config.json``, weight files (full paths, in order) and the
    inventory of its tensors."""

    path: str
    config: Dict[str, object]
    files: List[str]
    tensors: Dict[str, TensorInfo]

    @property
    def total_bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.files)


def read_json(path: str) -> Dict[str, object]:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as err:
        raise ConversionError(f"{path} is not readable JSON ({brief(err)})") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path} does not hold a JSON object")
    return value


def _weight_files(path: str) -> Tuple[List[str], Dict[str, str]]:
    """(files in order, index weight_map or {})."""
    for name in INDEX_FILES:
        index_file = os.path.join(path, name)
        if os.path.isfile(index_file):
            weight_map = read_json(index_file).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(f"{index_file} has no weight_map")
            files = list(dict.fromkeys(str(v) for v in weight_map.values()))
            for shard in files:
                if not os.path.isfile(os.path.join(path, shard)):
                    raise ConversionError(f"{index_file} names the shard {shard}, which is missing from {path}")
            return [os.path.join(path, f) for f in files], {str(k): str(v) for k, v in weight_map.items()}
    for name in SINGLE_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return [os.path.join(path, name)], {}
    raise ConversionError(f"{path} has no weights: expected {INDEX_FILES[0]}, {INDEX_FILES[1]}, {SINGLE_FILES[0]} or {SINGLE_FILES[1]}")


def _load_bin(file: str) -> Dict[str, torch.Tensor]:
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # pre-zip serialisation cannot be memory-mapped
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a weight file"
        raise ConversionError(f"{file} is not a readable state dict ({brief(err)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{file} does not hold a flat state dict of tensors")
    return state


def read_tensors(file: str) -> Iterator[Tuple[str, torch.Tensor]]:
    """The tensors of one weight file, one at a time (.safetensors lazily, .bin memory-mapped)."""
    if file.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            handle = safe_open(file, framework="pt")
        except Exception as err:  # noqa: BLE001 - a damaged header
            raise ConversionError(f"{file} is not a readable safetensors file ({brief(err)})") from None
        with handle as f:
            for key in f.keys():
                yield key, f.get_tensor(key)
        return
    state = _load_bin(file)
    while state:
        key = next(iter(state))
        yield key, state.pop(key)


def _headers(file: str) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    if file.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(file, framework="pt") as f:
                out = {}
                for key in f.keys():
                    part = f.get_slice(key)
                    out[key] = (tuple(int(s) for s in part.get_shape()), str(part.get_dtype()))
                return out
        except Exception as err:  # noqa: BLE001 - a damaged header
            raise ConversionError(f"{file} is not a readable safetensors file ({brief(err)})") from None
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in _load_bin(file).items()}


def open_checkpoint(path: str, what: str = "checkpoint") -> Checkpoint:
    """A checkpoint folder with its config and tensor inventory, checked for consistency.

    Raises:
        ConversionError: not a folder, no config.json, an index naming a missing shard, a key
            listed in the index but not in its shard (or the reverse), a key in two files.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ConversionError(f"{what} {path} is not a folder" if os.path.exists(path) else f"{what} {path} does not exist")
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ConversionError(f"{path} has no config.json: not a transformers checkpoint folder")
    config = read_json(config_file)
    files, weight_map = _weight_files(path)
    tensors: Dict[str, TensorInfo] = {}
    for file in files:
        name = os.path.basename(file)
        for key, (shape, dtype) in _headers(file).items():
            if key in tensors:
                raise ConversionError(f"{key!r} is stored twice, in {os.path.basename(tensors[key].file)} and {name}")
            if weight_map and weight_map.get(key) != name:
                raise ConversionError(f"{name} holds {key!r}, which the index places in {weight_map.get(key, 'no file')}")
            tensors[key] = TensorInfo(file, shape, dtype)
    absent = [k for k in weight_map if k not in tensors]
    if absent:
        raise ConversionError(f"the index lists {absent[0]!r} in {weight_map[absent[0]]}, but that shard does not hold it")
    return Checkpoint(path, config, files, tensors)
