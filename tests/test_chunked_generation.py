"""The shared journalled-chunk loop: resume equals an uninterrupted run, per-chunk seeds, prompts that do not fit."""

from pathlib import Path

import pytest

from ssb.chunked_generation import ChunkedGeneration, Job
from ssb.config import SamplingConfig
from ssb.generation import Completion, derive_seed


class WordChat:
    """Just enough of a ChatFormat for the context check: one token per word."""

    def prompt_ids(self, conversation):
        return conversation[-1]["content"].split()


class EchoBackend:
    """Answers ``<question> @<call seed> #<sample>``, 3 tokens each; can crash on a given call."""

    def __init__(self, context_length=None, crash_on_call=None):
        self.chat, self.context_length, self.crash_on_call, self.calls = WordChat(), context_length, crash_on_call, []

    def generate(self, prompts, params):
        self.calls.append([p[-1]["content"] for p in prompts])
        if len(self.calls) == self.crash_on_call:
            raise KeyboardInterrupt
        return [[Completion(f"{p[-1]['content']} @{params.seed} #{i}", [], "stop", 3) for i in range(params.n)] for p in prompts]


def loop(journal: Path, items: list[str], record=None) -> ChunkedGeneration:
    return ChunkedGeneration(
        journal=journal, items=items, item_id=lambda q: q, job=lambda q: Job([{"role": "user", "content": q}], {"asked": q}),
        record=record or (lambda index, q, job, completions: {"index": index, "id": q, **job.detail, "texts": [c.text for c in completions]}),
        sampling=SamplingConfig(max_new_tokens=4), samples_per_item=2, chunk_size=3, seed=11, seed_key="test", progress=False)


QUESTIONS = [f"q{i}" for i in range(8)]  # chunks of 3: [q0 q1 q2] [q3 q4 q5] [q6 q7]


def test_each_chunk_is_one_call_seeded_from_its_index(tmp_path):
    backend = EchoBackend()
    stats = loop(tmp_path / "j.jsonl", QUESTIONS).run(backend)
    assert backend.calls == [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q6", "q7"]]
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    assert len(lines) == 8
    seed_of_q4 = derive_seed(11, "test", 1)
    assert f'"texts": ["q4 @{seed_of_q4} #0", "q4 @{seed_of_q4} #1"]' in lines[4] and '"index": 4' in lines[4] and '"asked": "q4"' in lines[4]
    assert stats["generated_tokens"] == 8 * 2 * 3 and set(stats) == {"wall_s", "generated_tokens", "tokens_per_s"}


def test_interrupted_then_resumed_writes_what_an_uninterrupted_run_writes(tmp_path):
    loop(tmp_path / "whole.jsonl", QUESTIONS).run(EchoBackend())
    with pytest.raises(KeyboardInterrupt):
        loop(tmp_path / "cut.jsonl", QUESTIONS).run(EchoBackend(crash_on_call=2))
    assert len((tmp_path / "cut.jsonl").read_text().splitlines()) == 3  # the first chunk was journalled before the crash
    resumed = EchoBackend()
    stats = loop(tmp_path / "cut.jsonl", QUESTIONS).run(resumed)
    assert resumed.calls == [["q3", "q4", "q5"], ["q6", "q7"]]  # finished chunks are not generated again
    assert (tmp_path / "cut.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert stats["generated_tokens"] == 5 * 2 * 3  # only what this invocation appended
    again = EchoBackend()
    assert loop(tmp_path / "cut.jsonl", QUESTIONS).run(again)["generated_tokens"] == 0 and again.calls == []


def test_a_partly_finished_chunk_is_regenerated_whole_but_only_its_missing_items_appended(tmp_path):
    loop(tmp_path / "whole.jsonl", QUESTIONS).run(EchoBackend())
    whole = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "part.jsonl").write_text("".join(whole[:4]))  # q3 journalled, q4 and q5 not
    resumed = EchoBackend()
    loop(tmp_path / "part.jsonl", QUESTIONS).run(resumed)
    assert resumed.calls[0] == ["q3", "q4", "q5"]  # same call, same seed: q4 and q5 get the samples they would have had
    assert sorted((tmp_path / "part.jsonl").read_text().splitlines(keepends=True)) == sorted(whole)


def test_an_item_whose_prompt_does_not_fit_gets_no_completions_and_is_not_sent(tmp_path):
    items = ["short", "a much longer question that will not fit", "tiny"]
    backend = EchoBackend(context_length=6)  # max_new_tokens 4 leaves 2 prompt words
    seen = []

    def record(index, q, job, completions):
        seen.append((q, completions is None))
        return {"index": index, "id": q}

    loop(tmp_path / "j.jsonl", items, record).run(backend)
    assert backend.calls == [["short", "tiny"]]
    assert seen == [("short", False), (items[1], True), ("tiny", False)]
