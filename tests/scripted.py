"""A generation backend that answers from a script, to force known mixes of right and wrong."""

from __future__ import annotations

from collections.abc import Callable

from ssb.chat import ChatFormat
from ssb.generation import Completion, SamplingParams


class ScriptedBackend:
    """``respond(user_text, sample_index) -> text`` or ``(text, finish_reason)``; records every call."""

    def __init__(self, chat: ChatFormat, respond: Callable):
        self.chat, self.respond, self.calls = chat, respond, []
        self.context_length = None

    def generate(self, prompts, params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((prompts, params))
        out = []
        for conversation in prompts:
            user = conversation[-1]["content"]
            samples = []
            for s in range(params.n):
                reply = self.respond(user, s)
                text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
                ids = self.chat.tokenizer(text, add_special_tokens=False)["input_ids"]
                samples.append(Completion(text=text, token_ids=ids, finish_reason=finish, num_tokens=len(ids) + (finish == "stop")))
            out.append(samples)
        return out
