"""transformers ``generate`` backend: batches across questions and samples, left padding.

All ``len(prompts) * n`` sequences are sorted by prompt length and cut into batches of at most
``batch_size``, so that padding stays small; results are put back in prompt order. Generation
stops per row on the chat template's end-of-turn token (or eos). The random stream is seeded once
per call, so one call with the same inputs and seed reproduces its samples exactly; torch's global
random state is put back afterwards, so generating inside a training loop leaves its RNG (which
checkpoints save) where it was.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from ssb.chat import ChatFormat, Message
from ssb.generation.base import Completion, SamplingParams, completion_from_ids


class _TokenProgress(StoppingCriteria):
    """Never stops anything; advances a progress bar by one decoding step per call."""

    def __init__(self, bar: tqdm, rows: int):
        self.bar, self.rows = bar, rows

    def __call__(self, input_ids, scores, **kwargs):
        self.bar.update(self.rows)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class HFBackend:
    def __init__(self, model, chat: ChatFormat, batch_size: int = 32, progress: bool = True):
        self.model, self.chat, self.batch_size, self.progress = model, chat, batch_size, progress
        self.context_length = model.config.max_position_embeddings

    def with_adapter(self, adapter_dir: str) -> HFBackend:
        """This model with a PEFT adapter injected; ``close()`` on the result removes it again."""
        from ssb.lora import load_adapter

        model = load_adapter(self.model, adapter_dir).eval()
        return HFBackend(model, self.chat, self.batch_size, self.progress)

    def close(self) -> None:
        if hasattr(self.model, "unload"):  # a PeftModel: restore the base model's own layers
            self.model.unload()

    @torch.inference_mode()
    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[list[Completion]]:
        prompt_ids = [self.chat.prompt_ids(p) for p in prompts]
        rows = [(i, s) for i in range(len(prompts)) for s in range(params.n)]
        rows.sort(key=lambda row: len(prompt_ids[row[0]]))
        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        device = self.model.device
        # A complete config of our own: the model's generation_config may carry sampling defaults
        # (Qwen's has repetition_penalty 1.05, top_k 20) that would silently change the sampler.
        greedy = params.temperature == 0
        generation_config = GenerationConfig(
            max_new_tokens=params.max_new_tokens, do_sample=not greedy,
            temperature=None if greedy else params.temperature, top_p=None if greedy else params.top_p,
            top_k=None if greedy else params.top_k, repetition_penalty=1.0,
            eos_token_id=self.chat.stop_ids, pad_token_id=self.chat.pad_id,
        )
        # Seeded here, and torch's global random state restored after: a caller's RNG (a training loop's) is left as it was.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(params.seed)
            bar = tqdm(total=len(rows) * params.max_new_tokens, desc="generate", unit="tok", disable=not self.progress, leave=False)
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                width = max(len(prompt_ids[i]) for i, _ in batch)
                input_ids = torch.full((len(batch), width), self.chat.pad_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for r, (i, _) in enumerate(batch):
                    ids = prompt_ids[i]
                    input_ids[r, width - len(ids) :] = torch.tensor(ids)
                    attention[r, width - len(ids) :] = 1
                before = bar.n
                out = self.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=generation_config,
                    stopping_criteria=StoppingCriteriaList([_TokenProgress(bar, len(batch))]),
                )
                bar.update(len(batch) * params.max_new_tokens - (bar.n - before))  # rows that stopped early
                for r, (i, s) in enumerate(batch):
                    results[i][s] = completion_from_ids(self.chat, out[r, width:].tolist())
            bar.close()
        return results  # type: ignore[return-value]
