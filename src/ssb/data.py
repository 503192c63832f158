"""(question, gold answer) records from local JSONL files or the Hugging Face hub.

Each known benchmark has a layout: where its question and gold answer live in a record. GSM8K's gold
is the text after ``#### `` in its worked answer; SVAMP's question is Body + Question; numeric golds
stored as floats (SVAMP, MAWPS, AMC) are written back as the shortest exact decimal (``27.0`` -> ``27``).

A bad record (bytes that are not UTF-8, invalid JSON, JSON nested deeper than ``MAX_JSON_DEPTH``, a
string that is not valid Unicode, an integer too long to read, missing field, empty question, a gold
answer that is not text or a finite number, duplicate id, a gold answer the grader cannot parse) stops
loading with an error naming file, line and field, or, with ``on_bad_record="skip"``, is skipped and
reported in ``LoadedProblems.skipped`` with that same message. A line longer than ``MAX_LINE_BYTES``
always stops loading: the rest of such a line may never end (``/dev/zero``), so it cannot be skipped.
A file, split or slice that leaves no question to use is an error naming it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssb.config import DataConfig
from ssb.grading import gold_is_gradable
from ssb.synthetic import synthetic_records

_log = logging.getLogger(__name__)

# Far above any benchmark record (the longest shared one, an AIME 2024 line with its solution, is 11 kB), and small
# enough that one line always fits in memory.
MAX_LINE_BYTES = 4 * 1024 * 1024
# Benchmark records nest two or three levels; the bound keeps every later walk of a record far from Python's recursion limit.
MAX_JSON_DEPTH = 100
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SHOWN_CHARS = 80  # of a value quoted in an error message: the value itself may be megabytes long


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


def _shown(text: str) -> str:
    """``repr(text)``, cut to a length an error message can carry."""
    return repr(text) if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def _gold(record: dict, name: str) -> str:
    """The gold answer in field ``name`` as text; numbers stored as floats are written back as the shortest exact decimal."""
    value = _required(record, name)
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        raise DataError(f"{name}: empty gold answer")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{name}: the gold answer must be text or a number, got {type(value).__name__}")
    if isinstance(value, float):
        # json reads NaN, Infinity and numbers out of a float's range (1e999999) as floats no answer can equal.
        if not math.isfinite(value):
            raise DataError(f"{name}: the gold answer is not a finite number (JSON reads it as {value!r})")
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def _gsm8k(record: dict) -> tuple[str, str]:
    answer = str(_required(record, "answer"))
    if "####" not in answer:
        raise DataError("answer: no '#### ' final-answer marker")
    gold = answer.rsplit("####", 1)[1].strip()
    if not gold:
        raise DataError("answer: empty gold answer")
    return _required(record, "question"), gold


def _svamp(record: dict) -> tuple[str, str]:
    body, question = str(_required(record, "Body")).strip(), str(_required(record, "Question")).strip()
    return f"{body} {question}".strip(), _gold(record, "Answer")


# layout name -> (record -> (question, gold), field holding a record id or None, hub id, hub config)
LAYOUTS: dict[str, tuple[Callable[[dict], tuple[str, str]], str | None, str | None, str | None]] = {
    "gsm8k": (_gsm8k, None, "openai/gsm8k", "main"),
    "math500": (lambda r: (_required(r, "problem"), _gold(r, "answer")), "unique_id", "HuggingFaceH4/MATH-500", None),
    "aime24": (lambda r: (_required(r, "problem"), _gold(r, "answer")), "id", "HuggingFaceH4/aime_2024", None),
    "amc23": (lambda r: (_required(r, "question"), _gold(r, "answer")), "id", "math-ai/amc23", None),
    "svamp": (_svamp, "ID", "ChilleD/SVAMP", None),
    "mawps": (lambda r: (_required(r, "input"), _gold(r, "target")), None, "MU-NLPC/Calc-mawps", None),
}


# layout name -> the field holding a worked solution (the on-policy arm's gold-solution context); a layout not named has none.
SOLUTION_FIELDS = {"gsm8k": "answer", "math500": "solution"}


def solution_field(config: DataConfig) -> str | None:
    """The field of ``config``'s records that holds a worked solution, or None when its layout has none."""
    return config.solution_field if config.source == "jsonl" else SOLUTION_FIELDS.get(config.source)


def _jsonl_layout(config: DataConfig) -> Callable[[dict], tuple[str, str]]:
    return lambda r: (_required(r, config.question_field), _gold(r, config.answer_field))


class _LongInteger:
    """Stands in for a JSON integer with more digits than Python converts (``sys.get_int_max_str_digits``)."""

    def __init__(self, digits: int):
        self.digits = digits


def _read_int(text: str) -> int | _LongInteger:
    # json's own conversion raises a bare ValueError naming neither line nor field; this keeps the value aside to name them.
    digits, limit = len(text.lstrip("-")), sys.get_int_max_str_digits()
    return _LongInteger(digits) if 0 < limit < digits else int(text)


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether parsed JSON ``value`` has more than ``limit`` arrays and objects one inside another; walked without recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth == limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _unusable(value: Any) -> str | None:
    """Why ``value`` (a parsed JSON value, nested at most ``MAX_JSON_DEPTH``) cannot be used, or None."""
    if isinstance(value, str):  # decoded from UTF-8, a line can hold a lone surrogate only through a \u escape
        match = _LONE_SURROGATE.search(value)
        return None if match is None else f"not valid Unicode (a lone surrogate {match.group()!a})"
    if isinstance(value, _LongInteger):
        return f"an integer of {value.digits} digits, more than the {sys.get_int_max_str_digits()} Python reads"
    children = [*value.keys(), *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((why for why in map(_unusable, children) if why is not None), None)


def _parse_line(line: str, where: str) -> dict | DataError:
    # Parse, then measure: json's C decoder stops a nest past Python's recursion limit with a RecursionError, so the whole
    # check is linear in the line (a scan of the raw text for brackets outside strings is easily made quadratic).
    try:
        record = json.loads(line, parse_int=_read_int)
        too_deep = _nested_deeper_than(record, MAX_JSON_DEPTH)
    except RecursionError:
        too_deep = True
    except json.JSONDecodeError as exc:
        at = "" if exc.msg.endswith(" at") else " at"  # json's "Unterminated string starting at" already says it
        return DataError(f"{where}: invalid JSON ({exc.msg}{at} column {exc.colno})")
    if too_deep:
        return DataError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(record, dict):
        return DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key, value in record.items():
        why = _unusable(key) or _unusable(value)
        if why is not None:
            return DataError(f"{where}: {key.encode('utf-8', 'backslashreplace').decode()}: {why}")
    return record


def read_records(path: Path) -> Iterator[tuple[str, dict | DataError]]:
    """The JSON objects of the JSONL file ``path``, each with its ``file:line``; a bad line gives a DataError instead.

    Every JSONL file a user gives (questions, benchmarks) is read here, so the bounds hold for all of them:
    a line is read with at most ``MAX_LINE_BYTES`` in memory, and a longer one raises a DataError (it is not
    yielded: what follows it may never end); nesting is bounded by ``MAX_JSON_DEPTH``; bytes that are not
    UTF-8, lone surrogates and integers too long to convert are bad lines naming the line and field.
    """
    # Read as bytes and decode line by line, so that bytes that are not UTF-8 are one bad record with its line.
    try:
        with open(path, "rb") as f:
            number = 0
            while raw := f.readline(MAX_LINE_BYTES + 1):
                number += 1
                where = f"{path}:{number}"
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise DataError(f"{where}: line longer than {MAX_LINE_BYTES} bytes; a record is at most that long")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield where, DataError(f"{where}: not UTF-8 text (byte {exc.start + 1} of the line is {raw[exc.start]:#04x})")
                    continue
                if line.strip():
                    yield where, _parse_line(line, where)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


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
        extract, id_field, hub_id, hub_config = (lambda r: (r["question"], _gold(r, "answer"))), None, None, None
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
        records = read_records(path)
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
                raise DataError(f"{where}: id: duplicate id {_shown(problem.id)} (first at {seen[problem.id]})")
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
        message = f"{problem.source}: {answer_field}: gold answer {_shown(problem.gold)} cannot be parsed by the grader"
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
    if not isinstance(question, str):
        raise DataError(f"{where}: {question_field}: the question must be text, got {type(question).__name__}")
    if not question.strip():
        raise DataError(f"{where}: {question_field}: empty question")
    if id_field is not None and record.get(id_field) not in (None, ""):
        problem_id = f"{config.source}-{record[id_field]}"
    else:
        problem_id = f"{config.source}-{config.split}-{index}"
    field_name = solution_field(config)
    solution = record.get(field_name) if field_name is not None else None
    if solution is not None and not isinstance(solution, str):
        raise DataError(f"{where}: {field_name}: the worked solution must be text, got {type(solution).__name__}")
    return Problem(id=problem_id, question=question.strip(), gold=str(gold).strip(), source=where, solution=solution)
