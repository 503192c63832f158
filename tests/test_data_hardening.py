"""Question files a careless or hostile user could give: each bad input is one DataError naming file, line and field."""

import json
import logging
import re
from pathlib import Path

import pytest

from ssb.config import DataConfig
from ssb.data import MAX_JSON_DEPTH, MAX_LINE_BYTES, DataError, load_problems

GOOD = '{"question": "ok", "answer": "1"}'


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def error_and_skip(path: Path, message: str, caplog, **options) -> None:
    """``message`` stops loading by default, and under ``on_bad_record: skip`` is the one skip, logged, the good record kept."""
    with pytest.raises(DataError) as raised:
        load_problems(DataConfig(path=str(path), **options))
    assert str(raised.value) == message
    with caplog.at_level(logging.WARNING, logger="ssb.data"):
        loaded = load_problems(DataConfig(path=str(path), on_bad_record="skip", **options))
    assert [p.question for p in loaded.problems] == ["ok"] and loaded.skipped == [message]
    assert message in caplog.text


@pytest.mark.parametrize("gold, message", [
    ("NaN", "answer: the gold answer is not a finite number (JSON reads it as nan)"),
    ("1e999999", "answer: the gold answer is not a finite number (JSON reads it as inf)"),
    ("-Infinity", "answer: the gold answer is not a finite number (JSON reads it as -inf)"),
    ("[1, 2]", "answer: the gold answer must be text or a number, got list"),
    ("true", "answer: the gold answer must be text or a number, got bool"),
    ("9" * 5000, "answer: an integer of 5000 digits, more than the 4300 Python reads"),
])
def test_a_gold_that_is_not_text_or_a_finite_number_is_refused_naming_file_line_and_field(tmp_path, caplog, gold, message):
    path = write(tmp_path / "c.jsonl", GOOD, f'{{"question": "Q", "answer": {gold}}}')
    error_and_skip(path, f"{path}:2: {message}", caplog, source="jsonl")


def test_a_layout_names_its_own_gold_field(tmp_path):
    path = write(tmp_path / "s.jsonl", '{"Body": "b", "Question": "q", "Answer": NaN, "ID": "x"}')
    with pytest.raises(DataError, match=rf"^{path}:1: Answer: the gold answer is not a finite number"):
        load_problems(DataConfig(source="svamp", path=str(path)))


def test_numbers_that_are_finite_still_load(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"question": "a", "answer": 27.0}', '{"question": "b", "answer": -2.5}',
                 '{"question": "c", "answer": 1e20}', '{"question": "d", "answer": ' + "9" * 4300 + "}")
    golds = [p.gold for p in load_problems(DataConfig(source="jsonl", path=str(path))).problems]
    assert golds == ["27", "-2.5", "100000000000000000000", "9" * 4300]


@pytest.mark.parametrize("line, message", [
    ('{"question": "Q\\ud800", "answer": "2"}', "question: not valid Unicode (a lone surrogate '\\ud800')"),
    ('{"question": "Q", "answer": "\\udfff 2"}', "answer: not valid Unicode (a lone surrogate '\\udfff')"),
    ('{"question": "Q", "answer": "2", "meta": {"notes": ["\\udc00"]}}', "meta: not valid Unicode (a lone surrogate '\\udc00')"),
])
def test_a_lone_surrogate_is_refused_naming_file_line_and_field(tmp_path, caplog, line, message):
    path = write(tmp_path / "c.jsonl", GOOD, line)
    error_and_skip(path, f"{path}:2: {message}", caplog, source="jsonl")


def test_an_escaped_surrogate_pair_is_one_character_and_loads(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"question": "smile \\ud83d\\ude00", "answer": "1"}')
    assert load_problems(DataConfig(source="jsonl", path=str(path))).problems[0].question == "smile \U0001f600"


@pytest.mark.timeout(60)
def test_json_nested_200k_deep_is_one_line_naming_file_and_line(tmp_path, caplog):
    deep = '{"question": "Q", "answer": "2", "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    path = write(tmp_path / "c.jsonl", GOOD, deep)
    error_and_skip(path, f"{path}:2: JSON nested deeper than {MAX_JSON_DEPTH} levels", caplog, source="jsonl")


def test_brackets_inside_strings_are_not_nesting(tmp_path):
    path = write(tmp_path / "c.jsonl", json.dumps({"question": "[{" * 1000 + ' \\" [', "answer": "1"}))
    assert load_problems(DataConfig(source="jsonl", path=str(path))).problems[0].gold == "1"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("on_bad_record", ["error", "skip"])
def test_a_line_longer_than_the_bound_stops_loading_whatever_on_bad_record_says(tmp_path, on_bad_record):
    # 20 MB with no newline: read whole, it would be the MemoryError /dev/zero gives; skipping it could never end.
    path = tmp_path / "c.jsonl"
    with open(path, "wb") as f:
        f.write(GOOD.encode() + b"\n")
        f.write(b"\0" * (20 * 1024 * 1024))
    with pytest.raises(DataError) as raised:
        load_problems(DataConfig(source="jsonl", path=str(path), on_bad_record=on_bad_record))
    assert str(raised.value) == f"{path}:2: line longer than {MAX_LINE_BYTES} bytes; a record is at most that long"


def test_a_line_of_exactly_the_bound_is_read(tmp_path):
    record = '{"question": "Q", "answer": "1", "pad": "' + "x" * MAX_LINE_BYTES + '"}'
    record = record[: MAX_LINE_BYTES - 2] + '"}'
    path = write(tmp_path / "c.jsonl", record)
    assert len(path.read_bytes()) == MAX_LINE_BYTES + 1  # the line and its newline
    assert load_problems(DataConfig(source="jsonl", path=str(path))).problems[0].gold == "1"


@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_as_the_data_path_is_one_line():
    with pytest.raises(DataError) as raised:
        load_problems(DataConfig(source="jsonl", path="/dev/zero", on_bad_record="skip"))
    assert str(raised.value) == f"/dev/zero:1: line longer than {MAX_LINE_BYTES} bytes; a record is at most that long"


def test_a_folder_as_the_data_path_is_one_line_naming_it(tmp_path):
    with pytest.raises(DataError) as raised:
        load_problems(DataConfig(source="jsonl", path=str(tmp_path)))
    assert str(raised.value) == f"{tmp_path}: cannot read: Is a directory"


def test_a_long_value_is_cut_in_the_message(tmp_path):
    path = write(tmp_path / "c.jsonl", json.dumps({"question": "Q", "answer": "}{" * 50_000}))
    with pytest.raises(DataError, match=r"answer: gold answer '\}\{.*\.\.\. \(100000 characters\) cannot be parsed") as raised:
        load_problems(DataConfig(source="jsonl", path=str(path)))
    assert len(str(raised.value)) < 300


@pytest.mark.timeout(120)
@pytest.mark.parametrize("content, message", [
    (b'{"question": "Q\\ud800", "answer": "1"}\n', "q.jsonl:1: question: not valid Unicode (a lone surrogate '\\ud800')"),
    (b"\0" * (MAX_LINE_BYTES + 10), f"q.jsonl:1: line longer than {MAX_LINE_BYTES} bytes"),
    (b'{"question": "Q", "answer": NaN}\n', "q.jsonl:1: answer: the gold answer is not a finite number"),
])
def test_the_cli_prints_one_line(tmp_path, capsys, content, message):
    from ssb.cli import main

    (tmp_path / "q.jsonl").write_bytes(content)
    assert main(["rollouts", "--data.source", "jsonl", "--data.path", str(tmp_path / "q.jsonl"), "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"ssb rollouts: error: {tmp_path / message}" in err and "Traceback" not in err


@pytest.mark.timeout(10)
@pytest.mark.parametrize("closed", [False, True])
def test_a_line_of_escaped_quotes_then_brackets_is_read_in_linear_time(tmp_path, closed):
    # Each escaped quote could start a string that never closes: a scan for brackets outside strings that retries from each
    # one is quadratic, about 15 hours on a line at the bound; a parse is linear.
    escapes = '\\"' * ((MAX_LINE_BYTES - 200) // 2)
    line = '{"question": "' + escapes + "[" * (MAX_JSON_DEPTH + 1) + ('", "answer": "1"}' if closed else "")
    path = write(tmp_path / "c.jsonl", GOOD, line)
    if closed:  # the brackets are text in the question
        question = load_problems(DataConfig(source="jsonl", path=str(path))).problems[1].question
        assert question.endswith('"' + "[" * (MAX_JSON_DEPTH + 1))
    else:  # the string runs on to the newline, which JSON refuses inside a string
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: invalid JSON \(Invalid control character"):
            load_problems(DataConfig(source="jsonl", path=str(path)))
        assert len(load_problems(DataConfig(source="jsonl", path=str(path), on_bad_record="skip")).skipped) == 1


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 10, 500])
def test_nesting_is_counted_from_the_record_itself(tmp_path, caplog, depth):
    # The record is the first level. 500 levels parse, so they are refused by the measure of the parsed record, not the decoder.
    line = '{"question": "Q", "answer": "1", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    path = write(tmp_path / "c.jsonl", GOOD, line)
    if depth <= MAX_JSON_DEPTH:
        assert len(load_problems(DataConfig(source="jsonl", path=str(path))).problems) == 2
    else:
        error_and_skip(path, f"{path}:2: JSON nested deeper than {MAX_JSON_DEPTH} levels", caplog, source="jsonl")
