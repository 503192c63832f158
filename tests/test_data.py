import json
from pathlib import Path

import pytest

from ssb.config import DataConfig
from ssb.data import DataError, load_problems


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "source, split, first_gold, count",
    [("gsm8k", "train", "72", 7473), ("gsm8k", "test", "18", 1319), ("math500", "test", "\\left( 3, \\frac{\\pi}{2} \\right)", 500),
     ("aime24", "test", "204", 30), ("amc23", "test", "27", 40), ("svamp", "test", "145", 1000), ("mawps", "test", "43", 2065)],
)
def test_shared_benchmarks_load(shared_data, source, split, first_gold, count):
    loaded = load_problems(DataConfig(source=source, split=split, data_dir=str(shared_data)))
    assert len(loaded.problems) == count and not loaded.skipped
    assert loaded.problems[0].gold == first_gold
    assert len({p.id for p in loaded.problems}) == count


def test_layouts_on_small_files(tmp_path):
    gsm = write_lines(tmp_path / "g.jsonl", [{"question": "Q1", "answer": "work\n#### 2,125"}])
    assert load_problems(DataConfig(source="gsm8k", path=str(gsm))).problems[0].gold == "2,125"
    svamp = write_lines(tmp_path / "s.jsonl", [{"Body": "Ann has 3 apples.", "Question": "How many?", "Answer": 3.0, "ID": "c-1"}])
    p = load_problems(DataConfig(source="svamp", path=str(svamp))).problems[0]
    assert (p.question, p.gold, p.id) == ("Ann has 3 apples. How many?", "3", "svamp-c-1")
    mawps = write_lines(tmp_path / "m.jsonl", [{"input": "x", "target": 2.5}])
    assert load_problems(DataConfig(source="mawps", path=str(mawps))).problems[0].gold == "2.5"
    custom = write_lines(tmp_path / "c.jsonl", [{"prob": "What?", "final": 7, "uid": "a"}])
    p = load_problems(DataConfig(source="jsonl", path=str(custom), question_field="prob", answer_field="final", id_field="uid")).problems[0]
    assert (p.question, p.gold, p.id) == ("What?", "7", "jsonl-a")


def test_limit_offset_and_seeded_shuffle(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [{"question": f"Q{i}", "answer": str(i)} for i in range(20)])
    base = dict(source="jsonl", path=str(path))
    sliced = load_problems(DataConfig(**base, offset=3, limit=4)).problems
    assert [p.gold for p in sliced] == ["3", "4", "5", "6"]
    a = [p.gold for p in load_problems(DataConfig(**base, shuffle=True, shuffle_seed=1)).problems]
    b = [p.gold for p in load_problems(DataConfig(**base, shuffle=True, shuffle_seed=1)).problems]
    c = [p.gold for p in load_problems(DataConfig(**base, shuffle=True, shuffle_seed=2)).problems]
    assert a == b and a != c and sorted(a, key=int) == [str(i) for i in range(20)]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"question": "Q", "answer": ', "c.jsonl:2: invalid JSON"),
        ({"answer": "3"}, "c.jsonl:2: question: missing field"),
        ({"question": "Q"}, "c.jsonl:2: answer: missing field"),
        ({"question": "   ", "answer": "3"}, "c.jsonl:2: question: empty question"),
        ({"question": "Q", "answer": ""}, "c.jsonl:2: answer: empty gold answer"),
        ({"question": "Q", "answer": None}, "c.jsonl:2: answer: empty gold answer"),
        ('[1, 2]', "c.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "c.jsonl", [{"question": "ok", "answer": "1"}, bad_line, {"question": "ok2", "answer": "2"}])
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        load_problems(DataConfig(source="jsonl", path=str(path)))
    loaded = load_problems(DataConfig(source="jsonl", path=str(path), on_bad_record="skip"))
    assert [p.question for p in loaded.problems] == ["ok", "ok2"]
    assert len(loaded.skipped) == 1 and message in loaded.skipped[0]


def test_gsm8k_without_marker_and_duplicate_ids(tmp_path):
    gsm = write_lines(tmp_path / "g.jsonl", [{"question": "Q", "answer": "no marker"}])
    with pytest.raises(DataError, match=r"g\.jsonl:1: answer: no '#### '"):
        load_problems(DataConfig(source="gsm8k", path=str(gsm)))
    dup = write_lines(tmp_path / "d.jsonl", [{"question": "a", "answer": "1", "id": 5}, {"question": "b", "answer": "2", "id": 5}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: id: duplicate id 'jsonl-5' \(first at .*d\.jsonl:1\)"):
        load_problems(DataConfig(source="jsonl", path=str(dup), id_field="id"))


def test_missing_file_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_problems(DataConfig(source="gsm8k", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="unknown layout 'nope'"):
        load_problems(DataConfig(source="nope", path=str(tmp_path / "x.jsonl")))


def test_gold_the_grader_cannot_parse_is_an_error_or_a_skip(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [{"question": "ok", "answer": "1"}, {"question": "Q", "answer": "}{"}])
    with pytest.raises(DataError, match=r"c\.jsonl:2: answer: gold answer '\}\{' cannot be parsed by the grader"):
        load_problems(DataConfig(source="jsonl", path=str(path)))
    loaded = load_problems(DataConfig(source="jsonl", path=str(path), on_bad_record="skip"))
    assert [p.gold for p in loaded.problems] == ["1"] and "cannot be parsed" in loaded.skipped[0]


def test_bytes_that_are_not_utf8_name_file_and_line_and_are_skipped_on_request(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"question": "ok", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n{"question": "ok2", "answer": "3"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: not UTF-8 text \(byte 18 of the line is 0xe9\)"):
        load_problems(DataConfig(source="jsonl", path=str(path)))
    loaded = load_problems(DataConfig(source="jsonl", path=str(path), on_bad_record="skip"))
    assert [p.question for p in loaded.problems] == ["ok", "ok2"] and [p.source[-2:] for p in loaded.problems] == [":1", ":3"]
    assert len(loaded.skipped) == 1 and "c.jsonl:2: not UTF-8 text" in loaded.skipped[0]
    assert "c.jsonl:2: not UTF-8 text" in caplog.text


@pytest.mark.parametrize("lines, options", [
    ([], {}),  # an empty file
    (["", "  "], {}),  # blank lines only
    ([{"question": "Q", "answer": "1"}], {"offset": 1}),  # a slice past the end
    (['{"question": '], {"on_bad_record": "skip"}),  # every record skipped
])
def test_a_file_that_leaves_no_question_is_an_error_naming_it(tmp_path, lines, options):
    path = write_lines(tmp_path / "c.jsonl", lines) if lines else tmp_path / "c.jsonl"
    path.touch()
    with pytest.raises(DataError, match=rf"{path}: no questions to use"):
        load_problems(DataConfig(source="jsonl", path=str(path), **options))


def test_an_empty_data_file_stops_the_cli_naming_it(tmp_path, capsys):
    from ssb.cli import main

    (tmp_path / "q.jsonl").write_text("")
    assert main(["rollouts", "--data.source", "jsonl", "--data.path", str(tmp_path / "q.jsonl"), "--run_dir", str(tmp_path / "run")]) == 2
    assert f"ssb rollouts: error: {tmp_path / 'q.jsonl'}: no questions to use" in capsys.readouterr().err
