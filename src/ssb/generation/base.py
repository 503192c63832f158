"""The generation interface shared by all backends."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol

from ssb.chat import ChatFormat, Message

FinishReason = Literal["stop", "length"]


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 31-bit seed derived from ``seed`` and ``keys``: a stage's per-chunk seed (``derive_seed(seed, stage, chunk)``,
    independent of which chunks ran before) and a backend's per-request one (``derive_seed(call_seed, request)``)."""
    digest = hashlib.sha256(":".join(map(str, (seed, *keys))).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def overflow(chat: ChatFormat, conversation: list[Message], max_new_tokens: int, context_length: int | None) -> str | None:
    """Why ``conversation`` cannot be answered within the model's context, or None when it can."""
    if context_length is None:
        return None
    prompt = len(chat.prompt_ids(conversation))
    if prompt + max_new_tokens <= context_length:
        return None
    return f"prompt of {prompt} tokens + max_new_tokens {max_new_tokens} exceeds the model's context of {context_length} tokens"


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt
    temperature: float = 0.8  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 1024
    seed: int = 0  # one seed per call: the same call reproduces the same samples

    @classmethod
    def from_config(cls, sampling, n: int, seed: int) -> SamplingParams:
        return cls(n=n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                   max_new_tokens=sampling.max_new_tokens, seed=seed)


@dataclass(frozen=True)
class Completion:
    text: str  # decoded without the stop token and special tokens
    token_ids: list[int]  # generated ids, without the stop token
    finish_reason: FinishReason  # "stop": ended on a stop token; "length": hit max_new_tokens
    num_tokens: int  # generated tokens, counting the stop token


def completion_from_ids(chat: ChatFormat, generated: list[int]) -> Completion:
    """A completion from the generated ids: cut at the first stop token (end-of-turn or eos)."""
    stops = set(chat.stop_ids)
    end = next((i for i, t in enumerate(generated) if t in stops), None)
    ids = generated if end is None else generated[:end]
    text = chat.tokenizer.decode(ids, skip_special_tokens=True)
    if end is None:
        return Completion(text=text, token_ids=ids, finish_reason="length", num_tokens=len(ids))
    return Completion(text=text, token_ids=ids, finish_reason="stop", num_tokens=len(ids) + 1)


class GenerationBackend(Protocol):
    chat: ChatFormat  # the one chat format prompts are rendered with
    context_length: int | None  # prompt + generated tokens the model takes; None = unbounded
    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in prompt order."""
        ...

    def with_adapter(self, adapter_dir: str) -> GenerationBackend:
        """The same engine generating with a PEFT adapter on the base model."""
        ...

    def close(self) -> None:
        """Release what ``with_adapter`` created (the base backend stays usable)."""
        ...
