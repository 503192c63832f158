"""Generation backends: chat prompts in, sampled completions out.

``base`` defines the interface every backend implements; ``hf`` is the transformers backend.
A vLLM backend is one more module implementing ``GenerationBackend``.
"""

from ssb.chat import ChatFormat
from ssb.generation.base import Completion, GenerationBackend, SamplingParams, derive_seed, overflow

__all__ = ["Completion", "GenerationBackend", "LazyGenerator", "SamplingParams", "derive_seed", "make_backend", "overflow"]


def make_backend(config, chat, model) -> GenerationBackend:
    """The backend named by ``config.backend.name``."""
    if config.backend.name == "hf":
        from ssb.generation.hf import HFBackend

        return HFBackend(model=model, chat=chat, batch_size=config.backend.batch_size, progress=config.backend.progress)
    raise ValueError(f"backend.name: unknown backend {config.backend.name!r}")


class LazyGenerator:
    """The configured backend, with the tokenizer loaded now and the model only on first use.

    A stage that finds nothing left to generate (a resumed, finished run) never loads the model.
    """

    def __init__(self, config):
        from ssb.models import load_model_config, load_tokenizer

        self.config = config
        self.chat = ChatFormat(load_tokenizer(config.model))
        self.context_length = load_model_config(config.model).max_position_embeddings
        self._backend: GenerationBackend | None = None

    def generate(self, prompts, params):
        if self._backend is None:
            from ssb.models import load_model

            self._backend = make_backend(self.config, self.chat, load_model(self.config.model))
        return self._backend.generate(prompts, params)
