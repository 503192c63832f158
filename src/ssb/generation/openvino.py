"""OpenVINO GenAI backend: continuous batching on the CPU, with int8-compressed weights by default.

Inference precision ``auto`` is resolved by ssb (``precision_choice``: f32), not left to OpenVINO, whose own
choice (bf16 wherever the CPU has bf16 units) was measured slower than f32 with int8 weights on CPUs with
avx512_bf16, with AMX and without; the resolved precision is what a run folder records.

``ContinuousBatchingPipeline`` schedules every sequence of a call together: a row that ends frees
its slot for the next waiting one, so no step is spent decoding padding after a row has stopped
(the transformers backend's static batches do). Prompts are rendered and tokenized by ssb's own
``ChatFormat`` and passed as token ids, and completions are decoded by the same tokenizer, so the
chat template and the token ids are exactly those of every other stage.

Seeding, stopping and the request loop are those of ``ssb.generation.openvino_requests``, which the in-loop sampler
shares: each prompt of a call is one request seeded from (call seed, prompt index), so the same call reproduces the same
completions whatever else is scheduled beside it.

A backend made by ``from_config`` holds its export in the shared cache in use (``use_export``) from the
export until ``close``, so no other process prunes the IR before the pipeline is compiled from it; a
generate after ``close`` holds it again, exporting it anew if it was pruned meanwhile.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from ssb.chat import ChatFormat, Message
from ssb.generation.base import Completion, SamplingParams, completion_from_ids
from ssb.generation.openvino_requests import generation_config, run_requests

_log = logging.getLogger(__name__)


def precision_choice(setting: str) -> tuple[str, str]:
    """(precision, why): ``backend.openvino.inference_precision`` itself, or what ``auto`` resolves to on this CPU."""
    if setting != "auto":
        return setting, "set by backend.openvino.inference_precision"
    from ssb.models import cpu_bf16_unit

    # Measured with int8 weights (benchmarks/README.md, "Engine settings per CPU class"): f32 activations, which the CPU
    # plugin quantises to int8 for VNNI / AMX-int8 dot products (it never does so for bf16 ones), ran faster than bf16
    # with greedy GSM8K accuracy unchanged on a CPU with avx512_bf16 but no AMX (1.47x) and on one with AMX (1.58x at 256
    # new tokens, 1.06x in a whole `ssb eval`); without bf16 units f32 is OpenVINO's own choice.
    unit = cpu_bf16_unit()
    return "f32", f"auto: {f'f32 measured faster than bf16 on CPUs with {unit}' if unit else 'no bf16 units on this CPU'}"


class OpenVINOBackend:
    def __init__(self, model_dir: Path, chat: ChatFormat, context_length: int | None, max_num_seqs: int = 32,
                 kv_cache_gb: int = 4, inference_precision: str = "auto", progress: bool = True,
                 properties: dict | None = None):
        import openvino_genai as og

        self.chat, self.context_length, self.progress = chat, context_length, progress
        self.model_dir = Path(model_dir)
        self.config = None  # the SSBConfig it was made from, when made by from_config
        scheduler = og.SchedulerConfig()
        scheduler.cache_size = kv_cache_gb  # GB of KV cache shared by all running sequences
        scheduler.max_num_seqs = max_num_seqs
        scheduler.enable_prefix_caching = True  # refinement prompts share the system prompt
        self._og, self._scheduler = og, scheduler
        # ``properties``: further CPU plugin properties (benchmarks/engine_formats.py sets DYNAMIC_QUANTIZATION_GROUP_SIZE).
        self._properties = {**({} if inference_precision == "auto" else {"INFERENCE_PRECISION_HINT": inference_precision}),
                            **(properties or {})}
        self._pipeline = None
        self._export = None  # the cache entry it compiles from, held in use (from_config)
        self._use_export = None  # holds that entry again, exporting it if it is gone

    @property
    def pipeline(self):
        """The compiled pipeline, built on first use: an evaluation that only serves adapters never compiles the base
        model or reserves its KV cache (each adapter gets its own merged model)."""
        if self._pipeline is None:
            if self._export is not None and not self._export.held:  # released by close()
                self._export = self._use_export()
                self.model_dir = self._export.path
            self._pipeline = self._og.ContinuousBatchingPipeline(str(self.model_dir), self._scheduler, "CPU", self._properties)
        return self._pipeline

    @classmethod
    def from_config(cls, config, chat: ChatFormat, adapter_dir: str | None = None) -> OpenVINOBackend:
        """The backend on the cached export of ``config.model`` (with ``adapter_dir`` merged in)."""
        import json

        from ssb.generation.openvino_export import use_export
        from ssb.models import local_model_folder
        from ssb.packaged_models import default_cache_dir

        settings = config.backend.openvino
        hold = functools.partial(use_export, local_model_folder(config.model), default_cache_dir(), settings.weight_format,
                                 Path(adapter_dir) if adapter_dir else None, config.model.trust_remote_code)
        export = hold()
        ir = export.path
        context = json.loads((ir / "config.json").read_text()).get("max_position_embeddings")
        precision, why = precision_choice(settings.inference_precision)
        _log.info("openvino: %s weights, %s inference precision (%s)", settings.weight_format, precision, why)
        backend = cls(ir, chat, context, max_num_seqs=config.backend.batch_size, kv_cache_gb=settings.kv_cache_gb,
                      inference_precision=precision, progress=config.progress)
        backend.config, backend._export, backend._use_export = config, export, hold
        return backend

    def with_adapter(self, adapter_dir: str) -> OpenVINOBackend:
        """A backend on the base model with ``adapter_dir`` merged in (its export is cached)."""
        if self.config is None:
            raise ValueError("with_adapter needs a backend made by OpenVINOBackend.from_config (it exports the merged model)")
        return OpenVINOBackend.from_config(self.config, self.chat, adapter_dir)

    def close(self) -> None:
        self._pipeline = None  # frees the compiled model and its KV cache (a later generate compiles it again)
        if self._export is not None:
            self._export.release()  # the cache may prune the IR from now on

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[list[Completion]]:
        prompt_ids = [self.chat.prompt_ids(conversation) for conversation in prompts]
        configs = [generation_config(self._og, params, self.chat.stop_ids, i) for i in range(len(prompts))]
        samples = run_requests(self.pipeline, prompt_ids, params, configs, progress=self.progress)
        return [[completion_from_ids(self.chat, ids) for ids, _ in rows] for rows in samples]
