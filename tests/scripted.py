"""A generation backend that answers from a script, to force known mixes of right and wrong, and the scripts
the stage tests give it: the rollouts' mix by question number, refinements, and an iterated run's."""

from __future__ import annotations

import re
from collections.abc import Callable

from ssb.chat import ChatFormat
from ssb.generation import Completion, SamplingParams
from ssb.prompts import load_prompts


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


def rollout_script(user: str, s: int):
    """By question number modulo 4: all right; all wrong; mixed with a majority wrong answer; mixed, wrong unboxed."""
    i = int(re.match(r"Question (\d+)", user).group(1))
    kind = i % 4
    if kind == 0:
        return f"Easy. \\boxed{{{i}}}"
    if kind == 1:
        return f"Hmm. \\boxed{{{i + 1}}}"
    if kind == 2:
        return [f"Right: \\boxed{{{i}}}", f"Majority A \\boxed{{{i + 100}}}", f"Majority B \\boxed{{{i + 100}.0}}", f"Lone \\boxed{{{i + 7}}}"][s]
    return (f"Right: \\boxed{{{i}}}", "stop") if s == 0 else ("and so on and so on", "length")


def refine_script(user: str, s: int):
    """Refines correctly except question 6 (wrong) and question 7 (truncated)."""
    i = int(re.search(r"-----\nQuestion (\d+)", user).group(1))
    if i == 6:
        return f"Careful solution. \\boxed{{{i + 1}}}"
    if i == 7:
        return "Careful solution that never ends", "length"
    return f"Careful solution, step by step. \\boxed{{{i}}}"


def possible_hinted_prompts(question: int, shown: int) -> set[str]:
    """The hinted prompts refine may build for ``question`` from ``shown``'s rollouts (itself, or a donor's),
    written from the paper's template and what ``rollout_script`` generated, not from refine's output:
    the one correct rollout, and a wrong one from the majority answer (2 mod 4: i + 100 and i + 100.0 are
    one answer; the lone i + 7 is never shown) or the only kind of wrong rollout there is (3 mod 4)."""
    correct = f"Right: \\boxed{{{shown}}}"
    wrongs = {2: [f"Majority A \\boxed{{{shown + 100}}}", f"Majority B \\boxed{{{shown + 100}.0}}"], 3: ["and so on and so on"]}[shown % 4]
    template = load_prompts().hinted_template
    return {template.replace("{question}", f"Question {question}: what is {question}?").replace("{chosen_correct_generation}", correct)
            .replace("{rejected_generation}", wrong) for wrong in wrongs}


def rounds_script(user, s):
    """rollout_script's mix of right and wrong; refinements right (but 6 wrong, 7 truncated), and wrong from question 16 on."""
    if not user.startswith("We have two sample responses"):
        return rollout_script(user, s)
    i = int(re.search(r"-----\nQuestion (\d+)", user).group(1))
    return f"Careful, but wrong. \\boxed{{{i + 1}}}" if i >= 16 else refine_script(user, s)
