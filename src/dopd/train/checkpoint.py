"""Resume: a checkpoint's weights back into the model being trained, exactly, or an error.

`save_pretrained` (which writes every `checkpoint-N/`) stores a model in its checkpoint layout: transformers 5.x
reverts the model's weight conversions on save, so a Qwen2-VL / Qwen2.5-VL checkpoint holds `visual.*` and
`model.layers.*` while the module holds `model.visual.*` and `model.language_model.*`. `from_pretrained` converts
back; the Trainer's own resume (`Trainer._load_from_checkpoint`) calls `load_state_dict` without the conversion and
only warns about the keys that do not match, so a resumed VLM run would go on from the base weights. Here the
checkpoint's keys go through the very conversion `from_pretrained` applies (`get_model_conversion_mapping`, renamings
and tensor converters, in the order of `transformers.core_model_loading.convert_and_load_state_dict_in_model`; PEFT
does the same for adapters), and any key left over on either side is an error naming the checkpoint.

LoRA runs restore the adapter (`adapter_model.safetensors`) through peft's `load_adapter`, which converts adapter keys
itself; its missing or unexpected adapter keys are errors too. DeepSpeed runs do not come here: the Trainer restores
them from DeepSpeed's own `global_step*/` state, which holds the module's keys as they are.
"""

from __future__ import annotations

import json
import os
from copy import deepcopy
from typing import Any

import torch

from dopd.hparams import ConfigError

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class CheckpointMismatchError(ConfigError):
    """The checkpoint's weights do not fit the model being trained: nothing is loaded silently in part."""


def _shown(keys: Any, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _mismatch(unexpected: list, missing: Any, what: str) -> str:
    parts = [f" Checkpoint keys the {what} lacks: [{_shown(unexpected)}]." if unexpected else "",
             f" {what.capitalize()} keys the checkpoint lacks: [{_shown(missing)}]." if missing else ""]
    return "".join(parts)


def read_checkpoint_weights(folder: str) -> dict[str, torch.Tensor]:
    """The full state dict saved in `folder` (safetensors or `.bin`, one file or shards), on CPU, keys as saved."""
    from safetensors.torch import load_file

    def load(name: str) -> dict[str, torch.Tensor]:
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)

    for single, index in ((SAFE_WEIGHTS, SAFE_INDEX), (BIN_WEIGHTS, BIN_INDEX)):
        if os.path.isfile(os.path.join(folder, single)):
            return load(single)
        if os.path.isfile(os.path.join(folder, index)):
            with open(os.path.join(folder, index), encoding="utf-8") as fh:
                shards = sorted(set(json.load(fh)["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load(shard))
            return state
    raise CheckpointMismatchError(f"resume: {folder} holds no model weights ({SAFE_WEIGHTS}, {SAFE_INDEX}, "
                                  f"{BIN_WEIGHTS} or {BIN_INDEX})")


def to_model_layout(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list]:
    """Checkpoint keys -> the model's own keys, by the conversion `from_pretrained` applies to this model.

    Returns the converted state dict and the checkpoint keys that name nothing in the model (with their converted
    names where the conversion renamed them)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key

    expected = model.state_dict()
    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    pattern_to_converter = {p: c for c in converters for p in c.source_patterns}
    prefix = getattr(model, "base_model_prefix", None) or None
    pending: dict[str, Any] = {}
    unexpected: list[str] = []
    for key, tensor in sorted(state.items(), key=lambda kv: dot_natural_key(kv[0])):
        renamed, pattern = rename_source_key(key, renamings, converters, prefix, expected)
        if renamed not in expected and key in expected:  # as from_pretrained: a key already in the model's layout
            renamed, pattern = rename_source_key(key, [], [], prefix, expected)
        if renamed not in expected:
            unexpected.append(key if renamed == key else f"{key} (-> {renamed})")
            continue
        if pattern is not None:  # a tensor conversion (fused / split weights): one converter per target key
            mapping = pending.setdefault(renamed, deepcopy(pattern_to_converter[pattern]))
        else:
            mapping = pending.setdefault(renamed, WeightRenaming(key, renamed))
            pattern = key
        mapping.add_tensor(renamed, key, pattern, tensor)
    converted: dict[str, torch.Tensor] = {}
    for first_name, mapping in pending.items():
        for name, value in mapping.convert(first_name, model=model, config=model.config).items():
            converted[name] = value[0] if isinstance(value, list) else value
    return converted, unexpected


def _tied_aliases(model: torch.nn.Module, loaded: set[str]) -> set[str]:
    """Keys of the model whose tensor is shared with a loaded key (tied embeddings): `save_pretrained` writes one."""
    by_tensor: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        by_tensor.setdefault(id(tensor), []).append(name)
    return {name for names in by_tensor.values() if len(names) > 1 and loaded.intersection(names) for name in names}


def load_model_weights(model: torch.nn.Module, folder: str) -> None:
    """Copy the full checkpoint in `folder` into `model`'s own parameters (dtype, device, `requires_grad` and tying
    kept); raises `CheckpointMismatchError`, before copying anything, on any checkpoint key the model lacks, model key
    the checkpoint lacks or shape that differs."""
    converted, unexpected = to_model_layout(model, read_checkpoint_weights(folder))
    expected = model.state_dict()
    missing = set(expected) - set(converted) - _tied_aliases(model, set(converted))
    shapes = [f"{k} {tuple(v.shape)} for {tuple(expected[k].shape)}" for k, v in converted.items()
              if v.shape != expected[k].shape]
    if unexpected or missing or shapes:
        raise CheckpointMismatchError(
            f"resume: the checkpoint {folder} does not match the model being trained ({type(model).__name__}); "
            f"nothing was loaded.{_mismatch(unexpected, missing, 'model')}"
            f"{f' Wrong shapes: [{_shown(shapes)}].' if shapes else ''} Resume from a checkpoint of this same model "
            "and finetuning_type.")
    # every key checked above: what load_state_dict leaves out is only the tied aliases
    model.load_state_dict(converted, strict=False)


def load_adapter_weights(model: Any, folder: str) -> None:
    """A LoRA checkpoint into a `PeftModel` (its active adapter, trainable), strictly."""
    if not any(os.path.isfile(os.path.join(folder, name)) for name in ADAPTER_FILES):
        raise CheckpointMismatchError(f"resume: {folder} holds no LoRA adapter ({' or '.join(ADAPTER_FILES)}), but "
                                      "this run trains LoRA: resume from a checkpoint of a LoRA run")
    adapter = model.active_adapters[0]
    result = model.load_adapter(folder, adapter, is_trainable=True)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"resume: the LoRA checkpoint {folder} does not match the adapter being trained."
            f"{_mismatch(unexpected, missing, 'adapter')} Resume with the LoRA settings (lora_rank, lora_target, ...) "
            "of the run that wrote it.")


def load_checkpoint(model: torch.nn.Module, folder: str) -> None:
    """Resume the weights of `model` (a `PreTrainedModel`, or a `PeftModel` for LoRA) from `checkpoint-N/`."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        load_adapter_weights(model, folder)
        return
    if any(os.path.isfile(os.path.join(folder, name)) for name in ADAPTER_FILES) and not any(
            os.path.isfile(os.path.join(folder, name)) for name in (SAFE_WEIGHTS, SAFE_INDEX, BIN_WEIGHTS, BIN_INDEX)):
        raise CheckpointMismatchError(f"resume: {folder} holds a LoRA adapter, but this run trains "
                                      f"{type(model).__name__} in full: set finetuning_type=lora to resume it")
    load_model_weights(model, folder)
