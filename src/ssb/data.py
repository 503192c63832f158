"""(question, gold answer) records from local JSONL files or the Hugging Face hub.

Each known benchmark has a layout: where its question and gold answer live in a record. GSM8K's gold
is the text after ``#### `` in its worked answer; SVAMP's question is Body + Question; numeric golds
stored as floats (SVAMP, MAWPS, AMC) are written back as the shortest exact decimal (``27.0`` -> ``27``).

A bad record (bytes that are not UTF-8, invalid JSON, missing field, empty question or gold, duplicate
id, a gold answer the grader cannot parse) stops loading with an error naming file, line and field, or,
with ``on_bad_record="skip"``, is skipped and reported in ``LoadedProblems.skipped`` with that same
message. A file, split or slice that leaves no question to use is an error naming it.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssb.config import DataConfig
from ssb.grading import gold_is_gradable
from ssb.synthetic import synthetic_records

_log = logging.getLogger(__name__)


class DataError(ValueError):
    """A record that cannot be used, located by file, line and field."""


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    gold: str
    source: str  # file:line or hub id, for error messages and provenance
    solution: str | None = None  # the record's worked solution, as stored (GSM8K: its answer, annotations and all), where it has one


@dataclass
class LoadedProblems:
    problems: list[Problem]
    skipped: list[str] = field(default_factory=list)  # one message per skipped record


def _required(record: dict, name: str) -> Any:
    if name not in record:
        raise KeyError(name)
    return record[name]


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _gsm8k(record: dict) -> tuple[str, str]:
    answer = str(_required(record, "answer"))
    if "####" not in answer:
        raise DataError("answer: no '#### ' final-answer marker")
    return _required(record, "question"), answer.rsplit("####", 1)[1].strip()


def _svamp(record: dict) -> tuple[str, str]:
    body, question = str(_required(record, "Body")).strip(), str(_required(record, "Question")).strip()
    return f"{body} {question}".strip(), _number_text(_required(record, "Answer"))


# layout name -> (record -> (question, gold), field holding a record id or None, hub id, hub config)
LAYOUTS: dict[str, tuple[Callable[[dict], tuple[str, str]], str | None, str | None, str | None]] = {
    "gsm8k": (_gsm8k, None, "openai/gsm8k", "main"),
    "math500": (lambda r: (_required(r, "problem"), _required(r, "answer")), "unique_id", "HuggingFaceH4/MATH-500", None),
    "aime24": (lambda r: (_required(r, "problem"), _number_text(_required(r, "answer"))), "id", "HuggingFaceH4/aime_2024", None),
    "amc23": (lambda r: (_required(r, "question"), _number_text(_required(r, "answer"))), "id", "math-ai/amc23", None),
    "svamp": (_svamp, "ID", "ChilleD/SVAMP", None),
    "mawps": (lambda r: (_required(r, "input"), _number_text(_required(r, "target"))), None, "MU-NLPC/Calc-mawps", None),
}


# layout name -> the field holding a worked solution (the on-policy arm's gold-solution context); a layout not named has none.
SOLUTION_FIELDS = {"gsm8k": "answer", "math500": "solution"}


def solution_field(config: DataConfig) -> str | None:
    """The field of ``config``'s records that holds a worked solution, or None when its layout has none."""
    return config.solution_field if config.source == "jsonl" else SOLUTION_FIELDS.get(config.source)


def _jsonl_layout(config: DataConfig) -> Callable[[dict], tuple[str, str]]:
    return lambda r: (_required(r, config.question_field), _number_text(_required(r, config.answer_field)))


def _records_from_file(path: Path) -> Iterable[tuple[str, dict | Exception]]:
    # Read as bytes and decode line by line, so that bytes that are not UTF-8 are one bad record with its line.
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, DataError(f"{where}: not UTF-8 text (byte {exc.start + 1} of the line is {raw[exc.start]:#04x})")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                yield where, DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
                continue
            yield where, record


def _records_from_hub(hub_id: str, hub_config: str | None, split: str) -> Iterable[tuple[str, dict]]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"no local file given and the 'datasets' package is not installed to fetch {hub_id}; "
                        "set data.path or data.data_dir") from None
    try:
        rows = datasets.load_dataset(hub_id, hub_config, split=split)
    except Exception as exc:  # offline, unknown id or split: one clear message instead of a deep trace
        raise DataError(f"could not load {hub_id} ({split}) from the hub: {exc}; set data.path or data.data_dir for a local file") from None
    for index, row in enumerate(rows):
        yield f"{hub_id}[{split}][{index}]", dict(row)


def resolve_path(config: DataConfig) -> Path | None:
    if config.path:
        return Path(config.path)
    if config.data_dir:
        return Path(config.data_dir) / f"{config.source}_{config.split}.jsonl"
    return None


def load_problems(config: DataConfig) -> LoadedProblems:
    """Read, validate, shuffle (seeded), then apply offset and limit."""
    if config.source == "jsonl":
        extract, id_field, hub_id, hub_config = _jsonl_layout(config), config.id_field, None, None
    elif config.source == "synthetic":
        extract, id_field, hub_id, hub_config = (lambda r: (r["question"], r["answer"])), None, None, None
    elif config.source in LAYOUTS:
        extract, id_field, hub_id, hub_config = LAYOUTS[config.source]
    else:
        raise DataError(f"data.source: unknown layout {config.source!r}; known: {', '.join([*LAYOUTS, 'jsonl', 'synthetic'])}")

    path = resolve_path(config)
    if config.source == "synthetic":
        # Generated, not read: as many as offset + limit ask for (100 when no limit is set).
        count = config.offset + (100 if config.limit is None else config.limit)
        records = ((f"synthetic[{i}]", r) for i, r in enumerate(synthetic_records(count, config.shuffle_seed, config.split)))
    elif path is not None:
        if not path.exists():
            raise DataError(f"data file not found: {path}")
        records = _records_from_file(path)
    elif hub_id is not None:
        records = _records_from_hub(hub_id, hub_config, config.split)
    else:
        raise DataError("data.source=jsonl needs data.path (or data.data_dir)")

    loaded = LoadedProblems(problems=[])
    seen: dict[str, str] = {}
    for index, (where, record) in enumerate(records):
        try:
            if isinstance(record, Exception):
                raise record
            problem = _make_problem(record, where, index, config, extract, id_field)
            if problem.id in seen:
                raise DataError(f"{where}: id: duplicate id {problem.id!r} (first at {seen[problem.id]})")
            seen[problem.id] = where
            loaded.problems.append(problem)
        except DataError as exc:
            if config.on_bad_record == "error":
                raise
            _log.warning("skipping record: %s", exc)
            loaded.skipped.append(str(exc))

    if config.shuffle:
        random.Random(config.shuffle_seed).shuffle(loaded.problems)
    end = None if config.limit is None else config.offset + config.limit
    selected, loaded.problems = loaded.problems[config.offset : end], []
    answer_field = config.answer_field if config.source == "jsonl" else "answer"
    for problem in selected:  # after slicing: parsing every gold of a large file would be wasted work
        if gold_is_gradable(problem.gold):
            loaded.problems.append(problem)
            continue
        message = f"{problem.source}: {answer_field}: gold answer {problem.gold!r} cannot be parsed by the grader"
        if config.on_bad_record == "error":
            raise DataError(message)
        _log.warning("skipping record: %s", message)
        loaded.skipped.append(message)
    if not loaded.problems:
        origin = path or hub_id or config.source
        raise DataError(f"{origin}: no questions to use ({len(seen)} valid records, {len(loaded.skipped)} skipped, "
                        f"offset {config.offset}, limit {config.limit})")
    return loaded


def _make_problem(record: dict, where: str, index: int, config: DataConfig, extract, id_field: str | None) -> Problem:
    try:
        question, gold = extract(record)
    except KeyError as exc:
        raise DataError(f"{where}: {exc.args[0]}: missing field") from None
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    question_field = config.question_field if config.source == "jsonl" else "question"
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: {question_field}: empty question")
    if gold is None or not str(gold).strip() or str(gold).strip() == "None":
        raise DataError(f"{where}: {config.answer_field if config.source == 'jsonl' else 'answer'}: empty gold answer")
    if id_field is not None and record.get(id_field) not in (None, ""):
        problem_id = f"{config.source}-{record[id_field]}"
    else:
        problem_id = f"{config.source}-{config.split}-{index}"
    field_name = solution_field(config)
    solution = record.get(field_name) if field_name is not None else None
    if solution is not None and not isinstance(solution, str):
        raise DataError(f"{where}: {field_name}: the worked solution must be text, got {type(solution).__name__}")
    return Problem(id=problem_id, question=question.strip(), gold=str(gold).strip(), source=where, solution=solution)
