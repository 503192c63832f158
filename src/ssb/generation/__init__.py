"""Generation backends: chat prompts in, sampled completions out.

``base`` defines the interface every backend implements. ``hf`` (transformers ``generate``) is the
reference every other backend is tested against; ``openvino`` (OpenVINO GenAI continuous batching)
is the fast CPU engine and ``vllm`` the GPU engine. ``backend.name: auto`` picks vllm on a GPU and
openvino on a CPU when they are installed, else hf.
"""

import importlib.util
import logging

from ssb.chat import ChatFormat
from ssb.generation.base import Completion, GenerationBackend, SamplingParams, derive_seed, overflow

__all__ = ["Completion", "GenerationBackend", "LazyBackend", "SamplingParams", "backend_name", "backend_spec", "context_length",
           "derive_seed", "make_backend", "overflow"]

_log = logging.getLogger(__name__)


def backend_name(config) -> str:
    """The backend ``config.backend.name`` selects on this machine (``auto`` resolved)."""
    if config.backend.name != "auto":
        return config.backend.name
    from ssb.models import resolve_device

    device = resolve_device(config.model).type
    if device == "cuda":
        return "vllm" if importlib.util.find_spec("vllm") else "hf"
    if device == "cpu" and importlib.util.find_spec("openvino_genai"):
        return "openvino"
    return "hf"


def backend_spec(config) -> dict:
    """What a generation's numerics depend on besides the model: the backend and its precision."""
    import dataclasses

    from ssb.models import dtype_choice, resolve_device

    name = backend_name(config)
    if name == "openvino":
        from ssb.generation.openvino import precision_choice

        settings = config.backend.openvino  # auto resolves differently per CPU: the precision that runs is recorded
        return {"name": name, **dataclasses.asdict(settings), "inference_precision": precision_choice(settings.inference_precision)[0]}
    dtype = dtype_choice(config.model, resolve_device(config.model))[0]  # auto resolves differently per machine
    return {"name": name, "dtype": str(dtype).removeprefix("torch.")}


def context_length(config) -> int:
    """Prompt + generated tokens the configured backend takes: the model's ``max_position_embeddings``, or the engine's
    own smaller cap where one is set (``backend.vllm.max_model_len``), known before the engine starts."""
    from ssb.models import load_model_config

    model_limit = load_model_config(config.model).max_position_embeddings
    engine_cap = config.backend.vllm.max_model_len if backend_name(config) == "vllm" else None
    return model_limit if engine_cap is None else min(model_limit, engine_cap)


def make_backend(config, chat: ChatFormat) -> GenerationBackend:
    """The configured backend for the base model."""
    name = backend_name(config)
    _log.info("generation backend: %s%s", name, " (auto)" if config.backend.name == "auto" else "")
    if name == "hf":
        from ssb.generation.hf import HFBackend
        from ssb.models import load_model

        return HFBackend(model=load_model(config.model), chat=chat, batch_size=config.backend.batch_size, progress=config.progress)
    if name == "openvino":
        from ssb.generation.openvino import OpenVINOBackend

        return OpenVINOBackend.from_config(config, chat)
    if name == "vllm":
        from ssb.generation.vllm import VLLMBackend

        return VLLMBackend.from_config(config, chat)
    raise ValueError(f"backend.name: unknown backend {name!r}")


class LazyBackend:
    """The configured backend, with the tokenizer loaded now and the model only on first use.

    A stage that finds nothing left to generate (a resumed, finished run) never loads the model.
    """

    def __init__(self, config):
        from ssb.models import load_chat_format

        self.config = config
        self.chat = load_chat_format(config.model)
        self.context_length = context_length(config)  # prompts that cannot fit are dropped before the engine sees them
        self.name = backend_name(config)
        self._backend: GenerationBackend | None = None

    def generate(self, prompts, params):
        if self._backend is None:
            self._backend = make_backend(self.config, self.chat)
        return self._backend.generate(prompts, params)
