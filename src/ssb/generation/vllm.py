"""vLLM backend for GPUs: paged attention and continuous batching, adapters through vLLM's LoRA.

Prompts are rendered and tokenized by ssb's ``ChatFormat`` and passed as token ids; completions
are decoded from their token ids by the same tokenizer and cut at the first stop token, exactly as
in the other backends. Each prompt of a call is one request with its own seed, derived from (call
seed, prompt index), and its ``n`` samples are that request's ``n``, so the same call reproduces
the same completions. Adapters are served by vLLM's LoRA support (one engine for the base model and
every evaluated adapter); the engine is started with room for ranks up to ``backend.vllm.max_lora_rank``.
"""

from __future__ import annotations

from pathlib import Path

from ssb.chat import ChatFormat, Message
from ssb.generation.base import Completion, SamplingParams, completion_from_ids, derive_seed


class VLLMBackend:
    def __init__(self, llm, chat: ChatFormat, context_length: int | None, progress: bool = True, lora=None):
        self.llm, self.chat, self.context_length, self.progress, self.lora = llm, chat, context_length, progress, lora

    @classmethod
    def from_config(cls, config, chat: ChatFormat) -> VLLMBackend:
        from vllm import LLM

        from ssb.models import local_model_folder

        settings = config.backend.vllm
        model = str(local_model_folder(config.model))
        llm = LLM(model=model, tokenizer=model, dtype="auto" if config.model.dtype == "auto" else config.model.dtype,
                  seed=config.seed, tensor_parallel_size=settings.tensor_parallel_size,
                  data_parallel_size=settings.data_parallel_size, gpu_memory_utilization=settings.gpu_memory_utilization,
                  max_model_len=settings.max_model_len, max_num_seqs=config.backend.batch_size, enable_lora=True,
                  max_lora_rank=settings.max_lora_rank, trust_remote_code=config.model.trust_remote_code)
        context = llm.llm_engine.model_config.max_model_len
        return cls(llm, chat, context, config.progress)

    def with_adapter(self, adapter_dir: str) -> VLLMBackend:
        from vllm.lora.request import LoRARequest

        # vLLM identifies an adapter by a positive integer: derived from its path.
        lora_id = 1 + derive_seed(0, str(Path(adapter_dir).resolve()))
        lora = LoRARequest(Path(adapter_dir).name, lora_id, adapter_dir)
        return VLLMBackend(self.llm, self.chat, self.context_length, self.progress, lora)

    def close(self) -> None:
        if self.lora is not None:
            self.llm.llm_engine.remove_lora(self.lora.lora_int_id)

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        greedy = params.temperature == 0
        requests = [TokensPrompt(prompt_token_ids=self.chat.prompt_ids(p)) for p in prompts]
        sampling = [VLLMSamplingParams(n=1 if greedy else params.n, temperature=params.temperature, top_p=1.0 if greedy else params.top_p,
                                       top_k=0 if greedy else params.top_k, max_tokens=params.max_new_tokens,
                                       seed=derive_seed(params.seed, i), stop_token_ids=list(self.chat.stop_ids),
                                       repetition_penalty=1.0, skip_special_tokens=True)
                    for i in range(len(prompts))]
        outputs = self.llm.generate(requests, sampling, use_tqdm=self.progress, lora_request=self.lora)
        results = []
        for output in outputs:
            rows = [completion_from_ids(self.chat, list(o.token_ids)) for o in output.outputs]
            results.append(rows * params.n if greedy else rows)
        return results
