import json

import pytest

from ssb.runfolder.artifacts import JsonlAppender, RunFolderError, read_jsonl, write_json_atomic


def test_torn_tail_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')  # a crash mid-write
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    with JsonlAppender(path) as journal:
        journal.append({"a": 4})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 4}]
    assert path.read_text().endswith('{"a": 4}\n')


def test_torn_line_with_newline_at_end_is_a_tail_too(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    assert read_jsonl(path) == [{"a": 1}]


def test_corruption_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(RunFolderError, match=r"j\.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_atomic_json_write_leaves_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"x": 1})
    write_json_atomic(tmp_path / "m.json", {"x": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
