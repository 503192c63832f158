"""Loading the base model and its tokenizer: hub ids, local folders, GGUF files, packaged models.

A GGUF file is loaded through transformers' GGUF support, which dequantises every weight into a
plain module; the result behaves as any other causal LM. dtype ``auto`` means bfloat16 on a GPU and on
a CPU with bf16 matrix units (``amx_bf16`` / ``avx512_bf16``), float32 on other CPUs (bf16 is emulated,
and several times slower, there). LoRA weights and optimiser state stay float32 whatever the base's
dtype (PEFT keeps adapters in float32).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import torch

from ssb.config import ModelConfig
from ssb.packaged_models import PREFIX, gguf_folder, materialize
from ssb.runfolder.artifacts import read_text_file

_log = logging.getLogger(__name__)


def resolve_device(config: ModelConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


# The instruction-set flags that decide which kernels (and so which numerics) a CPU runs: bf16 and int8 matrix units,
# AVX-512 and VNNI dot products.
KERNEL_FLAGS = re.compile(r"^(avx2|fma|avx512\w*|amx\w*|avx_vnni\w*)$")


def cpu_flags(cpuinfo: str | None = None) -> tuple[str | None, set[str]]:
    """(model name, flags) of this CPU, from ``cpuinfo`` (the text of /proc/cpuinfo, read when not given); (None, empty)
    where it cannot be read."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, set()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:(.*)$", text, re.M)
    return (model.group(1).strip() if model else None), set(flags.group(1).split() if flags else ())


def cpu_bf16_unit(cpuinfo: str | None = None) -> str | None:
    """The bf16 matrix-unit flag this CPU reports (amx_bf16 or avx512_bf16), or None.

    ``cpuinfo``: the text of /proc/cpuinfo (read when not given).
    """
    _, flags = cpu_flags(cpuinfo)
    return next((flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags), None)


def cpu_record(cpuinfo: str | None = None) -> dict:
    """This CPU as a manifest records it: its model and kernel-deciding flags. Generated text depends on them: the same
    engine, weights and precision gave greedy GSM8K completions identical on 12 of 40 questions (37 of 40 grades) between
    a CPU with AMX and one with avx512_bf16 alone (studies/onpolicy/README.md)."""
    model, flags = cpu_flags(cpuinfo)
    return {"model": model, "kernel_flags": sorted(f for f in flags if KERNEL_FLAGS.match(f))}


def dtype_choice(config: ModelConfig, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why): ``model.dtype`` itself, or what ``auto`` resolves to on this device."""
    if config.dtype != "auto":
        return getattr(torch, config.dtype), "set by model.dtype"
    if device.type == "cuda":
        return torch.bfloat16, "auto: GPU"
    unit = cpu_bf16_unit()
    if device.type == "cpu" and unit is not None:
        # Measured (benchmarks/results/torch_precision.json, generation_engines.json): with bf16 matrix
        # units, bf16 runs the teacher, distillation and generation faster at a negligible loss change.
        return torch.bfloat16, f"auto: this CPU has {unit}"
    # Without them bf16 is emulated: measured 4.5x slower than float32 at prefill on an AVX2-only CPU.
    return torch.float32, "auto: no bf16 matrix units on this CPU (no amx_bf16 / avx512_bf16)"


def model_location(config: ModelConfig) -> tuple[str, dict]:
    """(path or id, from_pretrained kwargs) for the model's location."""
    kwargs: dict = {"trust_remote_code": config.trust_remote_code}
    if config.revision is not None:
        kwargs["revision"] = config.revision
    location = config.name_or_path
    if location.startswith(PREFIX):
        return str(materialize(location[len(PREFIX):])), kwargs
    if location.endswith(".gguf"):
        path = Path(location)
        if not path.is_file():
            raise FileNotFoundError(f"model.name_or_path: GGUF file not found: {path}")
        return str(path.parent), {**kwargs, "gguf_file": path.name}
    return location, kwargs


def local_model_folder(config: ModelConfig) -> Path:
    """A local folder of the model's weights in transformers' layout (what an engine converts from)."""
    location, kwargs = model_location(config)
    if "gguf_file" in kwargs:
        return gguf_folder(Path(location) / kwargs["gguf_file"])
    if Path(location).is_dir():
        return Path(location)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(location, revision=config.revision))


def load_model_config(config: ModelConfig):
    """The model's transformers config, without loading weights."""
    from transformers import AutoConfig

    location, kwargs = model_location(config)
    return AutoConfig.from_pretrained(location, **kwargs)


def load_tokenizer(config: ModelConfig):
    from transformers import AutoTokenizer

    location, kwargs = model_location(config)
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    if config.chat_template is not None:
        tokenizer.chat_template = read_text_file(Path(config.chat_template))
    if tokenizer.chat_template is None:
        raise ValueError(f"{config.name_or_path}: the tokenizer has no chat template; set model.chat_template to a Jinja file")
    return tokenizer


def load_chat_format(config: ModelConfig):
    """The chat format generation uses: it also stops on every eos id of the model's generation config."""
    from transformers import GenerationConfig

    from ssb.chat import ChatFormat
    from ssb.packaged_models import PACKAGED

    tokenizer = load_tokenizer(config)
    location, kwargs = model_location(config)
    try:
        eos = GenerationConfig.from_pretrained(location, **kwargs).eos_token_id
    except (OSError, ValueError, TypeError):  # no generation config (or none readable from a GGUF file)
        eos = None
    extra = [eos] if isinstance(eos, int) else list(eos or [])
    if config.name_or_path.startswith(PREFIX):
        extra += tokenizer.convert_tokens_to_ids(list(PACKAGED[config.name_or_path[len(PREFIX):]].stop_tokens))
    return ChatFormat(tokenizer, extra_stop_ids=tuple(extra))


def load_model(config: ModelConfig):
    """The causal LM on its device and dtype, in eval mode."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(config)
    dtype, why = dtype_choice(config, device)
    location, kwargs = model_location(config)
    start = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
    model.to(device).eval()
    _log.info("loaded %s (%s, %s; %s) in %.1fs", config.name_or_path, dtype, device, why, time.monotonic() - start)
    return model
