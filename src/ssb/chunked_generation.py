"""The generation loop every generating stage shares: chunk, skip what is journalled, seed, generate, append.

Rollouts, refinement and evaluation all turn a list of items (questions) into one journal line per
item. Items go in fixed chunks; each chunk is one backend call seeded from (seed, seed key, chunk
index), and its items are appended to the journal as soon as the call returns. After an
interruption the same call regenerates only chunks that still hold unfinished items, with the same
seeds, so the journal ends up as an uninterrupted run would have written it, and only the missing
items are appended. A stage supplies what differs: the conversation for each item, and how an
item's completions become its journal record.

Its timing comes back in the shape every stage reports as ``stats["this_invocation"]``
(``ssb.runfolder.folder.invocation_stats``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from tqdm.auto import tqdm

from ssb.chat import Message, messages
from ssb.data import DataError, LoadedProblems
from ssb.generation import Completion, SamplingParams, derive_seed, overflow
from ssb.runfolder.artifacts import JsonlAppender, read_jsonl
from ssb.runfolder.folder import invocation_stats

_log = logging.getLogger(__name__)

Item = TypeVar("Item")


@dataclass(frozen=True)
class Job:
    """What one item asks the backend for, and the facts its record repeats (e.g. the hint it was shown)."""

    conversation: list[Message]
    detail: dict = field(default_factory=dict)


@dataclass
class ChunkedGeneration(Generic[Item]):
    """One journalled, chunk-seeded pass over ``items``; ``run`` returns ``invocation_stats``.

    ``job(item)`` builds the item's request; ``record(index, item, job, completions)`` its journal
    line, where ``index`` is the item's position in ``items`` and ``completions`` is None when the
    conversation does not fit the model's context (the stage decides what such an item records).
    """

    journal: Path
    items: Sequence[Item]
    item_id: Callable[[Item], str]
    job: Callable[[Item], Job]
    record: Callable[[int, Item, Job, list[Completion] | None], dict]
    sampling: object  # a SamplingConfig
    samples_per_item: int
    chunk_size: int
    seed: int
    seed_key: str  # with the chunk index, what each chunk's seed derives from
    progress: bool = True
    description: str = "generate"

    def run(self, backend) -> dict:
        done = {entry["id"] for entry in read_jsonl(self.journal)}
        size = self.chunk_size
        chunks = [(c, self.items[s : s + size]) for c, s in enumerate(range(0, len(self.items), size))]
        pending = [(c, chunk) for c, chunk in chunks if any(self.item_id(item) not in done for item in chunk)]
        _log.info("%s: %d items, %d done, %d chunks to generate", self.description, len(self.items), len(done), len(pending))
        start, tokens = time.monotonic(), 0
        with JsonlAppender(self.journal) as journal:
            for c, chunk in tqdm(pending, desc=self.description, unit="chunk", disable=not self.progress):
                params = SamplingParams.from_config(self.sampling, n=self.samples_per_item, seed=derive_seed(self.seed, self.seed_key, c))
                jobs = [self.job(item) for item in chunk]
                # Finished items of a pending chunk are generated again (the chunk's seed covers all of
                # them, so dropping some would change the others' samples) and then not appended.
                fits = [overflow(backend.chat, j.conversation, params.max_new_tokens, backend.context_length) is None for j in jobs]
                asked = [j.conversation for j, ok in zip(jobs, fits) if ok]
                generated = backend.generate(asked, params) if asked else []
                if len(generated) != len(asked):
                    raise RuntimeError(f"{self.description}: the backend answered {len(generated)} of {len(asked)} prompts")
                generated = iter(generated)
                for offset, (item, job, ok) in enumerate(zip(chunk, jobs, fits)):
                    completions = next(generated) if ok else None
                    if self.item_id(item) in done:
                        continue
                    journal.append(self.record(c * size + offset, item, job, completions))
                    tokens += sum(x.num_tokens for x in completions or [])
        return invocation_stats(time.monotonic() - start, tokens)


def drop_overlong(loaded: LoadedProblems, backend, system: str, max_new_tokens: int, on_bad_record: str) -> None:
    """Remove (or refuse) questions whose prompt and generation budget exceed the model's context."""
    keep = []
    for problem in loaded.problems:
        why = overflow(backend.chat, messages(system, problem.question), max_new_tokens, backend.context_length)
        if why is None:
            keep.append(problem)
            continue
        message = f"{problem.source}: question: {why}"
        if on_bad_record == "error":
            raise DataError(message)
        _log.warning("skipping record: %s", message)
        loaded.skipped.append(message)
    loaded.problems = keep
