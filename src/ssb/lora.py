"""The one LoRA set-up of every trained arm (distillation, GRPO): ``distill.lora`` as PEFT's config.

Built here only, so "the same adapter shape for every arm" holds by construction: ssb's own training
loop wraps the model with ``build_peft_model``, and TRL's trainers get the same ``peft_lora_config``.
Every adapter ssb saves goes through ``save_adapter`` (or ``canonical_adapter_config`` after a trainer's own
save), so that its adapter_config.json is the same bytes for the same adapter: PEFT keeps ``target_modules``
as a set and writes it in set order, which follows the process's hash seed, and a stage that recorded the
config's digest would otherwise see a retrained (or restored and rerun) adapter as changed.
A saved adapter is loaded back with ``load_adapter`` (evaluation, a round's merge), which refuses one whose
weights file lacks tensors its config targets (PEFT would leave them fresh, with a warning) or holds others.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ssb.runfolder.artifacts import RunFolderError, read_json_file, write_json_atomic, writing
from ssb.runfolder.file_modes import follow_umask

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # PEFT's two formats, in the order PEFT loads them
_SET_VALUED = ("target_modules", "exclude_modules")  # what PEFT's LoraConfig holds as sets (written in hash order)
_NAMES_SHOWN, _NAME_CHARS = 3, 120  # an error names a few keys, each cut short: a hostile header can hold millions


def peft_lora_config(config):
    """``config.distill.lora`` as a PEFT ``LoraConfig`` (no bias, causal LM)."""
    from peft import LoraConfig

    lora = config.distill.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
                      bias="none", task_type="CAUSAL_LM")


def build_peft_model(model, config):
    """``model`` with fresh LoRA adapters of the run's shape (PEFT initialises B to zero: the base model's function),
    recomputing activations in backward when ``distill.gradient_checkpointing`` asks (TRL's trainers do their own)."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, peft_lora_config(config))
    if config.distill.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


def canonical_adapter_config(adapter_dir: Path) -> None:
    """Rewrite ``adapter_dir``'s adapter_config.json canonically: set-valued fields sorted, keys sorted at every level."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    config = read_json_file(path)
    for key in _SET_VALUED:
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    write_json_atomic(path, json.loads(json.dumps(config, sort_keys=True)))  # the round trip orders nested keys too


def save_adapter(peft_model, adapter_dir: Path) -> None:
    """Save ``peft_model``'s adapter into ``adapter_dir`` (PEFT's format) with a canonical adapter_config.json, its weights
    with the umask's mode (``ssb.runfolder.file_modes``)."""
    with writing(adapter_dir):
        peft_model.save_pretrained(adapter_dir)
    canonical_adapter_config(adapter_dir)
    follow_umask(adapter_dir)


def _some(names: set[str]) -> str:
    shown = [name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS] + "..." for name in sorted(names)[:_NAMES_SHOWN]]
    return ", ".join(shown) + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


def saved_tensor_names(weights: Path) -> set[str]:
    """The tensor names in an adapter's weights file: a safetensors header alone, or a ``.bin`` loaded as PEFT loads it
    (tensors only, no code)."""
    import torch
    from safetensors import safe_open

    if weights.suffix == ".safetensors":
        with safe_open(str(weights), framework="pt") as f:
            return set(f.keys())
    return set(torch.load(weights, map_location="cpu", weights_only=True))


_LORA_TENSOR = re.compile(r"\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)(\.|$)")


def base_weights_in(saved: set[str], model) -> set[str]:
    """The tensors of an adapter file that are not LoRA tensors, nor the embedding layers PEFT may save beside them (a
    resized vocabulary): weights of the base model."""
    embeddings = {module for module in (model.get_input_embeddings(), model.get_output_embeddings()) if module is not None}
    allowed = {f"base_model.model.{name}.weight" for name, module in model.named_modules() if module in embeddings}
    return {name for name in saved if not _LORA_TENSOR.search(name) and name not in allowed}


def tensor_mismatch(peft_model, weights: Path) -> str | None:
    """What is wrong with the tensors in ``weights`` for ``peft_model`` (the base model with the adapters its config
    targets): the tensors PEFT would save for it and the file lacks, and those in the file that nothing of the model
    takes; None when they agree."""
    from peft import get_peft_model_state_dict

    saved = saved_tensor_names(weights)
    expected = set(get_peft_model_state_dict(peft_model, save_embedding_layers=False))
    # A file may also carry the embedding layers PEFT saves beside the adapter (a resized vocabulary), and nothing else:
    # PEFT loads with strict=False, so any other key of the base model's would silently overwrite that base weight.
    taken = set(get_peft_model_state_dict(peft_model, save_embedding_layers=True))
    missing, unexpected = expected - saved, saved - taken
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) of modules it targets are missing ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) match no module it targets ({_some(unexpected)})")
    return "; ".join(problems) or None


def load_adapter(model, adapter_dir):
    """``model`` with the PEFT adapter saved in ``adapter_dir``; one PEFT cannot load (weights of another rank or modules
    than its adapter_config.json, a truncated weights file) is a RunFolderError naming the folder."""
    import warnings

    import torch
    from peft import PeftModel
    from safetensors import SafetensorError

    weights = next((path for name in ADAPTER_WEIGHTS if (path := Path(adapter_dir) / name).is_file()), None)  # the file PEFT loads
    foreign = base_weights_in(saved_tensor_names(weights), model) if weights is not None else set()
    if foreign:  # refused before PEFT loads them: its strict=False load would overwrite the model's own weights
        raise RunFolderError(f"{weights}: holds {len(foreign)} weight(s) of the base model, not of a LoRA adapter ({_some(foreign)}); "
                             "train it again, or restore the folder as it was saved")
    try:
        with warnings.catch_warnings():
            # PEFT only warns when tensors are missing and leaves them fresh (B = 0): checked below, as an error.
            warnings.filterwarnings("ignore", message="Found missing adapter keys")
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, SafetensorError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = next((line for line in lines if line.startswith("size mismatch")), lines[0]).rstrip(".")  # torch lists every tensor
        raise RunFolderError(f"{adapter_dir}: the adapter does not load ({detail}); its weights file is damaged or does not "
                             "match its adapter_config.json: train it again, or restore the folder as it was saved") from None
    problem = tensor_mismatch(peft_model, weights)
    if problem:
        peft_model.unload()  # the base model's own layers again, for a caller that goes on with it
        raise RunFolderError(f"{weights}: the adapter does not match its adapter_config.json: {problem}; train it again, "
                             "or restore the folder as it was saved")
    return peft_model
