"""One chat format for every stage: rollouts, refinement, teacher, student and evaluation.

A prompt is a list of chat messages; ``ChatFormat`` renders it with the tokenizer's chat template
(generation prompt added) and tokenizes the text once, without adding special tokens a second
time. Models whose template has no system role get the system text folded into the first user
turn. ``end_of_turn_id`` is the token the template writes after an assistant message; generation
stops on it and distillation scores it as the last solution token.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

Message = dict[str, str]  # {"role": ..., "content": ...}

_SENTINEL = "\u2063SSB_SENTINEL\u2063"


def messages(system: str, user: str, assistant: str | None = None) -> list[Message]:
    out = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if assistant is not None:
        out.append({"role": "assistant", "content": assistant})
    return out


def fold_system_into_user(conversation: list[Message]) -> list[Message]:
    """For templates without a system role: the system text opens the first user turn."""
    if not conversation or conversation[0]["role"] != "system":
        return conversation
    system, rest = conversation[0]["content"], [dict(m) for m in conversation[1:]]
    if rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


@dataclass
class ChatFormat:
    tokenizer: object  # a transformers tokenizer with a chat template
    extra_stop_ids: tuple[int, ...] = ()  # more tokens that end a generation (the model's generation config eos ids)

    def _render(self, conversation: list[Message], add_generation_prompt: bool) -> str:
        if not self.supports_system_role:
            conversation = fold_system_into_user(conversation)
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)

    @cached_property
    def supports_system_role(self) -> bool:
        probe = [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "x"}]
        try:
            text = self.tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        except Exception:  # templates signal "no system role" by raising (jinja's raise_exception)
            return False
        return _SENTINEL in text  # some templates silently drop it

    def prompt_text(self, conversation: list[Message]) -> str:
        """The text the model sees before it starts answering."""
        return self._render(conversation, add_generation_prompt=True)

    def prompt_ids(self, conversation: list[Message]) -> list[int]:
        return self.tokenizer(self.prompt_text(conversation), add_special_tokens=False)["input_ids"]

    @cached_property
    def end_of_turn_id(self) -> int:
        """The first token the template writes after an assistant message's content."""
        conversation = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
        text = self._render(conversation, add_generation_prompt=False)
        suffix = text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""
        ids = self.tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix.strip() else []
        if ids:
            return ids[0]
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the chat template closes assistant turns with nothing and the tokenizer has no eos token")
        return self.tokenizer.eos_token_id

    @cached_property
    def stop_ids(self) -> list[int]:
        """Tokens that end a generation: the end-of-turn token, the tokenizer's eos, and the extra ones."""
        ids = [self.end_of_turn_id]
        for token in (self.tokenizer.eos_token_id, *self.extra_stop_ids):
            if token is not None and token not in ids:
                ids.append(token)
        return ids

    @cached_property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.stop_ids[-1]


def tokenizer_hash(tokenizer) -> str:
    """Fingerprint of vocabulary, merges, special tokens and chat template (what alignment depends on)."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update((tokenizer.chat_template or "").encode())
    h.update(json.dumps(tokenizer.all_special_tokens).encode())
    return h.hexdigest()[:16]
