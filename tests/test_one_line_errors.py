"""Every mistake a user can make, and every damaged file, ends a command with one line, ``ssb CMD: error: FILE: what is wrong;
what to do``, exit 2; Ctrl-C with "interrupted; run the same command to resume", exit 130; only a bug in ssb prints a
traceback, and then says so."""

import errno
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

import ssb.cli
import ssb.runfolder.export
from helpers import phase1_folder
from ssb.cli import main
from test_file_errors import cli_args, one_error_line
from test_run_export import finished_run


@pytest.fixture(scope="module")
def a_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("errors")
    run = finished_run(folder, tiny_model_dir)[2]
    ssb.runfolder.export.export_run(run, folder / "export")
    return run, folder / "export"


@pytest.fixture
def damaged(a_run, tmp_path):
    """A copy of the finished run (at its own path: the report reads it where it lies) to damage."""
    copy = tmp_path / "run"
    shutil.copytree(a_run[0], copy)
    return copy


def summary_without_model(run: Path) -> Path:
    path = run / "eval" / "base" / "gsm8k.summary.json"
    summary = json.loads(path.read_text())
    del summary["model"]
    path.write_text(json.dumps(summary))
    (run / "manifest.json").unlink()  # no digest to catch it first: the reader itself must
    return path


def replaced(name: str, data: bytes):
    def breaks(run: Path) -> Path:
        (run / name).write_bytes(data)
        return run / name

    return breaks


DAMAGES = {
    "stats.json that is an array": (replaced("stats.json", b"[]"), "holds a JSON list, not the dict ssb writes there"),
    "garbage manifest.json": (replaced("manifest.json", b"garbage"), "not a valid JSON file (Expecting value at line 1 column 1)"),
    "non-UTF-8 manifest.json": (replaced("manifest.json", b'{"\xff": 1}'), "not UTF-8"),
    "stats of a stage that are not an object": (replaced("stats.json", b'{"rollouts": 3}'), "not the stats ssb writes"),
    "a summary without its fields": (summary_without_model, "names no model and benchmark"),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_report_of_a_damaged_folder_is_one_line_naming_the_file(damaged, tmp_path, capsys, damage):
    breaks, says = DAMAGES[damage]
    path = breaks(damaged)
    assert main(["report", str(damaged), "--out", str(tmp_path / "report")]) == 2
    line = one_error_line(capsys, "report")
    assert line.startswith(f"ssb report: error: {path}: ") and says in line, line


def test_a_report_into_a_path_it_cannot_write_is_one_line(a_run, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert main(["report", str(a_run[0]), "--out", str(tmp_path / "a-file" / "report")]) == 2
    assert str(tmp_path / "a-file") in one_error_line(capsys, "report")


def test_a_damaged_stage_state_or_manifest_stops_a_stage_naming_it(tmp_path, tiny_model_dir, capsys):
    config = phase1_folder(tmp_path, tiny_model_dir)
    state = Path(config.run_dir) / ".ssb" / "refine.json"
    state.write_bytes(b'{"\xff": 1}')
    assert main(["refine", *cli_args(config)]) == 2
    assert one_error_line(capsys, "refine").startswith(f"ssb refine: error: {state}: not a valid JSON file (not UTF-8 at byte 2)")
    state.write_text('{"inputs": 3}')
    assert main(["refine", *cli_args(config)]) == 2
    assert f"{state}: records no inputs and start time" in one_error_line(capsys, "refine")
    (Path(config.run_dir) / "manifest.json").write_text("garbage")
    assert main(["teacher", *cli_args(config)]) == 2
    assert f"{Path(config.run_dir) / 'manifest.json'}: not a valid JSON file" in one_error_line(capsys, "teacher")


def export_copy(a_run, tmp_path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(a_run[1], copy)
    return copy


@contextmanager
def moved_away(run: Path):
    moved = run.with_name("moved-away")
    run.rename(moved)
    try:
        yield
    finally:
        moved.rename(run)


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def not_gzip(path: Path) -> None:
    path.write_bytes(b"plain text, not gzip\n")


@pytest.mark.parametrize("breaks", [cut_in_half, flip_a_bit, not_gzip])
def test_a_restore_of_a_damaged_gzip_is_one_line_naming_it(a_run, tmp_path, capsys, breaks):
    export = export_copy(a_run, tmp_path)
    path = export / "round-1" / "rollouts.jsonl.gz"
    breaks(path)
    with moved_away(a_run[0]):  # a restore goes only to the path the run was made in, and only into a new folder
        assert main(["restore", str(export), str(a_run[0])]) == 2
        line = one_error_line(capsys, "restore")
        assert line.startswith(f"ssb restore: error: {path}: not a whole gzip file") and line.endswith("export the run again"), line
        assert not a_run[0].exists()


def test_a_restore_of_json_nested_too_deep_is_one_line(a_run, tmp_path, capsys):
    export = export_copy(a_run, tmp_path)
    path = export / "round-1" / "stats.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with moved_away(a_run[0]):
        assert main(["restore", str(export), str(a_run[0])]) == 2
    assert one_error_line(capsys, "restore").startswith(f"ssb restore: error: {path}: not a JSON file (nested too deep)")


def test_a_full_disk_during_a_restore_names_the_file_and_leaves_no_folder(a_run, tmp_path, capsys, monkeypatch):
    def full(path, **_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ssb.runfolder.export, "open_for_writing", full)
    with moved_away(a_run[0]):
        assert main(["restore", str(a_run[1]), str(a_run[0])]) == 2
        line = one_error_line(capsys, "restore")
        assert "No space left on device" in line and "the disk is full; free space, then run the command again" in line
        assert f".{a_run[0].name}.restoring-" in line and not a_run[0].exists()


def run_raising(monkeypatch, exc: BaseException) -> None:
    """``ssb run`` raising ``exc`` from inside the command, as a stage would."""
    def raises(config, force):
        raise exc

    monkeypatch.setattr(ssb.cli, "run_all", raises)


def test_ctrl_c_is_one_line_saying_how_to_resume_and_frees_the_folder(tmp_path, monkeypatch, capsys):
    run_raising(monkeypatch, KeyboardInterrupt())
    assert main(["run", "--run_dir", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err.strip() == "ssb run: interrupted; run the same command to resume (what was finished is kept)"
    monkeypatch.setattr(ssb.cli, "run_all", lambda config, force: {})
    assert main(["run", "--run_dir", str(tmp_path / "run")]) == 0  # the folder is free again


def test_a_bug_in_ssb_shows_its_traceback_and_says_it_is_one(tmp_path, monkeypatch, capsys):
    def buggy(config, force):
        return {}["missing"]

    monkeypatch.setattr(ssb.cli, "run_all", buggy)
    assert main(["run", "--run_dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'missing'" in err
    assert err.strip().splitlines()[-1] == ("ssb run: this is a bug in ssb, not a problem with your input; please report it with the "
                                            "traceback above")


def test_an_unknown_log_level_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["rollouts", "--log-level", "BOGUS"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --log-level: invalid choice: 'BOGUS'" in err and "Traceback" not in err
    assert ssb.cli.build_parser().parse_args(["rollouts", "--log-level", "debug"]).log_level == "DEBUG"


def test_a_refused_pickle_is_one_line(tmp_path, monkeypatch, capsys):
    import pickle

    run_raising(monkeypatch, pickle.UnpicklingError("Weights only load failed. This file can still be loaded...\nmore lines"))
    assert main(["run", "--run_dir", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys, "run") == ("ssb run: error: refused a file that is not plain tensors and values (it could run code): "
                                             "Weights only load failed. This file can still be loaded...")


def test_a_report_of_a_summary_without_its_numbers_is_one_line(damaged, tmp_path, capsys):
    path = damaged / "eval" / "base" / "gsm8k.summary.json"
    path.write_text(json.dumps({"model": "base", "benchmark": "gsm8k", "pass@1": {"mean": 0.5}}))
    (damaged / "manifest.json").unlink()
    assert main(["report", str(damaged), "--out", str(tmp_path / "report")]) == 2
    assert one_error_line(capsys, "report").startswith(f"ssb report: error: {path}: not an evaluation summary ssb wrote")


@pytest.mark.parametrize("config_bytes, says", [(b"{not json", "not a valid JSON file (Expecting property name enclosed in double quotes"),
                                                (b"\xff\xfe\xff", "not a valid JSON file"), (b"[1]", "holds a JSON list")])
def test_an_adapter_with_a_bad_config_is_one_line_naming_it(a_run, tmp_path, tiny_model_dir, capsys, config_bytes, says):
    adapter = tmp_path / "adapter"
    shutil.copytree(a_run[0] / "distill" / "adapter", adapter)
    (adapter / "adapter_config.json").write_bytes(config_bytes)
    flags = ["--model", str(tiny_model_dir), "--adapter", f"x={adapter}", "--out", str(tmp_path / "eval"), "--benchmarks", "gsm8k",
             "--limit", "1", "--max-new-tokens", "2",
             "--backend.name", "hf", "--data-dir", str(a_run[0].parent / "bench")]
    assert main(["eval", *flags]) == 2
    assert one_error_line(capsys, "eval").startswith(f"ssb eval: error: {adapter / 'adapter_config.json'}: {says}")


@pytest.mark.parametrize("option, content, says", [
    ("prompts.hinted", b"\xff\xfe{question}", "not UTF-8 text (byte 0); save it as UTF-8"),
    ("model.chat_template", b"caf\xe9", "not UTF-8 text (byte 3); save it as UTF-8"),
    ("model.chat_template", b"{{ ''.__class__.__mro__[1].__subclasses__() }}", "the chat template was refused: "),
])
def test_a_users_prompt_or_chat_template_that_cannot_be_used_is_one_line(tmp_path, tiny_model_dir, capsys, option, content, says):
    config = phase1_folder(tmp_path, tiny_model_dir, run="first")
    path = tmp_path / "user-file"
    path.write_bytes(content)
    flags = [flag if not flag.startswith("--run_dir=") else f"--run_dir={tmp_path / 'run'}" for flag in cli_args(config)]
    assert main(["rollouts", *flags, f"--{option}={path}", "--data.limit=2", "--rollouts.sampling.max_new_tokens=2"]) == 2
    line = one_error_line(capsys, "rollouts")
    assert says in line and (str(path) in line or "chat template" in line), line


@pytest.mark.parametrize("value, says", [
    ("[a", "not a YAML value: expected ',' or ']', but got '<stream end>' (line 1, column 3)"),
    ("[" * 3000, "not a YAML value: nested too deep"),
    ("a\x01", "not a YAML value: unacceptable character #x0001: special characters are not allowed"),
])
def test_a_flag_value_that_is_not_yaml_is_refused_by_the_parser_in_one_line(capsys, value, says):
    with pytest.raises(SystemExit) as stop:
        main(["rollouts", "--refine.prompt_terms", value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"ssb rollouts: error: argument --refine.prompt_terms: {says}"


def test_running_out_of_gpu_memory_is_one_line_not_a_bug(tmp_path, monkeypatch, capsys):
    import torch

    run_raising(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert main(["run", "--run_dir", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys, "run") == ("ssb run: error: out of memory; free memory or lower the batch sizes, then run the command "
                                             "again (what was finished is kept)")


def test_a_long_message_is_cut_to_a_bound(tmp_path, monkeypatch, capsys):
    run_raising(monkeypatch, ValueError("x" * 100_000))
    assert main(["run", "--run_dir", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys, "run").endswith("x... (98000 more characters)")
