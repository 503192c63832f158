"""ssb's CPU engine serving a policy that changes during training: OpenVINO GenAI with runtime LoRA.

A trainer (GRPO's, an on-policy distiller's) samples from its own LoRA policy. Exporting a merged
model after every optimiser step would cost about a minute each; instead the base model is exported
once and the engine applies the trainer's current LoRA matrices at run time
(``openvino_genai.Adapter``), which is token-identical to PEFT's model in fp32 (tests/test_policy_sampler.py).
In int8 it is not the merged export's arithmetic (int8 base weights plus the LoRA product, against quantised
merged weights): on the packaged model the two part after a median 21 greedy tokens (benchmarks/runtime_lora.py).
A weight push is a safetensors write of the LoRA matrices and an ``Adapter`` load: 0.04-0.09 s for the packaged
model's rank-32 adapter, 3-4 s the first time (it builds the pipeline; benchmarks/grpo_sampling.py), against a
minute for a merged export.

Each optimiser step's weights are pushed with ``push(step, lora)``; ``generate(..., step)`` samples with
the newest pushed at or before ``step - lag`` (the *policy lag*: exactly ``lag`` steps back where every step's
weights were pushed; fewer while the run is younger than ``lag``) and returns which step sampled, so the
trainer can record the lag it actually ran with.

OpenVINO GenAI's rules this module keeps, each silent when broken:
- the pipeline must be built with an ``AdapterConfig`` holding an adapter of the trained shape (an
  empty one at build time makes every later adapter a no-op), so it is built on the first push;
- the blend ``alpha`` is PEFT's scaling (``lora_alpha / r``; ``adapter_config.json`` is not read);
- the adapter is the pipeline's, not a request's: ``add_request`` ignores a request's own adapter and
  uses the one the last ``generate()`` set, so each call first runs a one-token ``generate()`` with the
  wanted adapter and then queues its requests;
- prefix caching is off: with it, a swap would reuse KV cached under the previous adapter.

Requests are built and stepped by ``ssb.generation.openvino_requests``, as evaluation's are: request ``i`` of a call
samples with ``derive_seed(seed, i)``, so the same weights, prompts and seed give the same completions.
Log-probabilities are the engine's own, of the raw (temperature 1) distribution, one per generated token.
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ssb.chat import ChatFormat
from ssb.generation.base import SamplingParams
from ssb.generation.openvino_requests import generation_config, run_requests


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]  # generated ids, the stop token included when the sample stopped on one
    logprobs: list[float]  # the engine's log-probability of each generated token (temperature 1)
    finish_reason: str  # "stop" or "length"


def lora_scaling(peft_config) -> float:
    """The factor PEFT multiplies ``B @ A`` by: ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA). Per-module ranks or
    alphas have no single factor, so they are refused."""
    if getattr(peft_config, "rank_pattern", None) or getattr(peft_config, "alpha_pattern", None):
        raise ValueError("the runtime-LoRA sampler needs one rank and alpha for every module (no rank_pattern / alpha_pattern)")
    return peft_config.lora_alpha / (peft_config.r ** 0.5 if getattr(peft_config, "use_rslora", False) else peft_config.r)


def lora_state(model) -> dict:
    """The LoRA matrices of a PEFT model, named as PEFT saves them (the names ``openvino_genai.Adapter`` reads), as
    contiguous float32 CPU copies: a snapshot that later optimiser steps do not change."""
    from peft import get_peft_model_state_dict

    return {name: tensor.detach().to("cpu", copy=True).float().contiguous() for name, tensor in get_peft_model_state_dict(model).items()}


class PolicySampler:
    """Continuous-batching generation from the base model's OpenVINO export with a pushed LoRA policy applied."""

    def __init__(self, ir_dir: Path, chat: ChatFormat, scaling: float, lag: int = 0, max_num_seqs: int = 32,
                 kv_cache_gb: int = 4, inference_precision: str = "auto"):
        import openvino_genai as og

        if lag < 0:
            raise ValueError(f"policy lag must be >= 0, got {lag}")
        self._og, self.ir_dir, self.chat, self.scaling, self.lag = og, Path(ir_dir), chat, scaling, lag
        scheduler = og.SchedulerConfig()
        scheduler.cache_size = kv_cache_gb
        scheduler.max_num_seqs = max_num_seqs
        scheduler.enable_prefix_caching = False  # KV cached under one adapter must not serve another
        self._scheduler = scheduler
        self._properties = {} if inference_precision == "auto" else {"INFERENCE_PRECISION_HINT": inference_precision}
        self._pipeline = None
        self._export, self._hold = None, None  # the cache entry it compiles from, held in use, and how to hold it again (from_config)
        self._adapters: dict[int, object] = {}  # step -> openvino_genai.Adapter
        self.states: dict[int, dict] = {}  # step -> LoRA matrices, for checkpoints (a lagged resume needs them)
        self.pushes_s: list[float] = []  # seconds of each push not yet reported (the trainer's metrics take them)

    @classmethod
    def from_config(cls, config, chat: ChatFormat, scaling: float, lag: int) -> PolicySampler:
        """The sampler on the cached OpenVINO export of ``config.model`` with ``config.backend``'s engine settings."""
        from ssb.generation.openvino import precision_choice
        from ssb.generation.openvino_export import use_export
        from ssb.models import local_model_folder
        from ssb.packaged_models import default_cache_dir

        settings = config.backend.openvino
        # Held in use from here to close(): the IR is compiled at the first push, and a prune must not take it before.
        hold = functools.partial(use_export, local_model_folder(config.model), default_cache_dir(), settings.weight_format, None,
                                 config.model.trust_remote_code)
        export = hold()
        sampler = cls(export.path, chat, scaling, lag, max_num_seqs=config.backend.batch_size, kv_cache_gb=settings.kv_cache_gb,
                      inference_precision=precision_choice(settings.inference_precision)[0])  # auto resolved as evaluation resolves it
        sampler._export, sampler._hold = export, hold
        return sampler

    def push(self, step: int, lora: dict) -> None:
        """Make ``lora`` (``lora_state``'s matrices) the weights of optimiser step ``step``; weights no later sampling
        can use (older than the newest at or before ``step - lag``) are dropped."""
        from safetensors.torch import save_file

        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ssb-lora-") as folder:
            path = Path(folder) / "adapter_model.safetensors"
            save_file(lora, str(path))
            adapter = self._og.Adapter(str(path))  # read into memory: the file may go
        self._adapters[step], self.states[step] = adapter, lora
        # Sampling at ``step`` or later never uses weights older than the newest at or before ``step - lag``, which
        # stays even when pushes are more than one step apart.
        reachable = [s for s in self._adapters if s <= step - self.lag]
        for old in [s for s in self._adapters if s < max(reachable, default=min(self._adapters))]:
            del self._adapters[old], self.states[old]
        if self._pipeline is None:
            if self._export is not None and not self._export.held:  # released by close(): held (or exported) again
                self._export = self._hold()
                self.ir_dir = self._export.path
            self._pipeline = self._og.ContinuousBatchingPipeline(
                str(self.ir_dir), self._scheduler, "CPU", {**self._properties, "adapters": self._og.AdapterConfig(adapter, self.scaling)})
        self.pushes_s.append(time.monotonic() - start)

    def sampling_step(self, step: int) -> int:
        """The step whose weights sample at ``step``: the newest pushed at or before ``step - lag``, or the oldest pushed
        one while the run is younger than the lag."""
        if not self._adapters:
            raise RuntimeError("no policy weights pushed yet (PolicySampler.push)")
        eligible = [s for s in self._adapters if s <= max(step - self.lag, min(self._adapters))]
        return max(eligible)

    def close(self) -> None:
        self._pipeline = None
        self._adapters.clear()
        self.states.clear()
        if self._export is not None:
            self._export.release()  # the cache may prune the IR from now on

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, step: int) -> tuple[list[list[Sample]], int]:
        """``params.n`` samples of each tokenized prompt from the weights of ``sampling_step(step)``, in prompt order,
        and that step. Greedy decoding samples once per prompt and repeats it ``n`` times."""
        import numpy as np
        import openvino as ov

        sampled = self.sampling_step(step)
        adapters = self._og.AdapterConfig(self._adapters[sampled], self.scaling)
        # The pipeline's adapter is the one the last generate() set; add_request would ignore its own.
        select = generation_config(self._og, SamplingParams(temperature=0, max_new_tokens=1), self.chat.stop_ids, 0, True, adapters)
        self._pipeline.generate([ov.Tensor(np.array([prompt_ids[0][-1:]], dtype=np.int64))], [select])
        configs = [generation_config(self._og, params, self.chat.stop_ids, i, True, adapters) for i in range(len(prompt_ids))]
        stops = set(self.chat.stop_ids)
        return [[Sample(ids, logprobs, "stop" if ids and ids[-1] in stops else "length") for ids, logprobs in rows]
                for rows in run_requests(self._pipeline, prompt_ids, params, configs)], sampled
