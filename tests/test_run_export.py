"""ssb export and ssb restore (ssb.runfolder.export) of a plain run: a folder of compressed files, the same bytes for the same
content, from which the run folder is rebuilt so that ssb run trains the weights again, bit for bit, and computes
nothing else again; an export that is malformed, or names a path outside the run folder, is refused. The iterated
run's export and restore are in test_evidence_restore.py."""

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import rounds_config, sha
from scripted import ScriptedBackend, rounds_script
from ssb.chat import ChatFormat
from ssb.cli import main
from ssb.models import load_tokenizer
from ssb.run import run_all
from ssb.runfolder.export import RunExportError, export_run, restore_run

WEIGHTS = ["distill/adapter/adapter_model.safetensors", "teacher/targets-00000.safetensors"]
COMPUTED = ["rollouts.jsonl", "refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl", "eval/base/gsm8k.samples.jsonl",
            "eval/ssb/gsm8k.samples.jsonl", "eval/ssb/gsm8k.summary.json", ".ssb/rollouts.json", ".ssb/refine.json", ".ssb/eval/ssb/gsm8k.json"]


def finished_run(folder: Path, tiny_model_dir):
    """A plain run (one round) finished on the tiny model, refine journalled in several chunks."""
    config = rounds_config(folder, tiny_model_dir, "run", **{"refine.chunk_questions": 2})
    backend = ScriptedBackend(ChatFormat(load_tokenizer(config.model)), rounds_script)
    run_all(config, backend=backend)
    return config, backend, Path(config.run_dir)


def files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def stages(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"]


@pytest.fixture
def exported(tmp_path, tiny_model_dir):
    """A finished plain run exported, then moved away (the machine that ran it is gone)."""
    config, backend, run = finished_run(tmp_path, tiny_model_dir)
    export_run(run, tmp_path / "export")
    run.rename(tmp_path / "gone")
    return config, backend, run, tmp_path / "export", tmp_path / "gone"


@pytest.fixture(scope="module")
def an_export(tmp_path_factory, tiny_model_dir):
    """One finished plain run's export, its run folder moved away, for the tests that only read or break a copy of it."""
    folder = tmp_path_factory.mktemp("exported")
    _, _, run = finished_run(folder, tiny_model_dir)
    export_run(run, folder / "export")
    run.rename(folder / "gone")
    return run, folder / "export"


def test_a_restored_plain_run_trains_the_weights_again_and_computes_nothing_else_again(exported):
    config, backend, run, export, gone = exported
    assert sorted(files(export)) == sorted(
        ["report.md", "accuracy.png", "training.png", "round-1/stats.json", "round-1/manifest.json", "round-1/distill/metrics.jsonl.gz",
         *(f"round-1/{name}.jsonl.gz" for name in ("rollouts", "refinements", "teacher", "student", "dropped")),
         *(f"round-1/state/{stage}.json" for stage in ("rollouts", "refine", "teacher", "distill", "eval/base/gsm8k", "eval/ssb/gsm8k")),
         *(f"round-1/eval/{model}/gsm8k.{kind}" for model in ("base", "ssb") for kind in ("samples.jsonl.gz", "summary.json"))])
    assert restore_run(export, run) == {"round-1": ["eval/base/gsm8k", "eval/ssb/gsm8k", "refine", "rollouts"]}
    assert not (run / "distill").exists() and not (run / "teacher").exists()  # no weights came back
    assert {"teacher", "distill"}.isdisjoint(stages(run)) and not (run / ".ssb/distill.json").exists()
    assert (run / "report.md").read_bytes() == (gone / "report.md").read_bytes()
    for name in COMPUTED:
        assert sha(run / name) == sha(gone / name), name
    restored = {name: os.stat(run / name).st_mtime_ns for name in COMPUTED}
    calls = len(backend.calls)
    run_all(config, backend=backend)
    assert len(backend.calls) == calls  # rollouts and refine were skipped
    assert {name: os.stat(run / name).st_mtime_ns for name in COMPUTED} == restored  # and so were the evaluations: untouched
    for name in WEIGHTS:
        assert sha(run / name) == sha(gone / name), name  # retrained bit for bit
    before, after = stages(gone), stages(run)
    assert set(after) == set(before)
    for stage in ("rollouts", "refine", "eval/base/gsm8k", "eval/ssb/gsm8k"):  # not finished again: same entry, timestamps included
        assert after[stage] == before[stage], stage
    for stage in ("teacher", "distill"):
        assert after[stage]["inputs"] == before[stage]["inputs"], stage


def test_the_commands_export_restore_and_run_resume_on_another_machine(exported, tmp_path, capsys):
    """ssb export, ssb restore and ssb run on the command line, the run with the same config (and no scripted backend:
    nothing is generated again)."""
    config, _, run, _, gone = exported
    gone.rename(run)
    assert main(["export", str(run), str(tmp_path / "by-cli")]) == 0
    assert "round-1:\n  - distill\n" in capsys.readouterr().out
    assert files(tmp_path / "by-cli") == files(tmp_path / "export")
    run.rename(gone)
    assert main(["restore", str(tmp_path / "by-cli"), str(run)]) == 0
    assert "restore:\n  round-1:\n  - eval/base/gsm8k\n" in capsys.readouterr().out
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(dataclasses.asdict(config)))
    assert main(["run", "--config", str(config_file)]) == 0
    for name in WEIGHTS:
        assert sha(run / name) == sha(gone / name), name
    assert stages(run)["eval/ssb/gsm8k"] == stages(gone)["eval/ssb/gsm8k"]


def test_an_export_is_the_same_bytes_every_time(tmp_path, tiny_model_dir):
    _, _, run = finished_run(tmp_path, tiny_model_dir)
    export_run(run, tmp_path / "one")
    export_run(run, tmp_path / "two")
    first = files(tmp_path / "one")
    assert first == files(tmp_path / "two") and len(first) == 21
    assert export_run(run, tmp_path / "one") == {"round-1": sorted(stages(run))}  # into itself: brought up to date, unchanged
    assert files(tmp_path / "one") == first


def test_an_export_of_a_restored_run_keeps_what_it_has_until_the_weights_are_trained_again(exported, caplog):
    config, backend, run, export, _ = exported
    restore_run(export, run)
    exported_files = files(export)
    assert export_run(run, export) == {}  # nothing of round 1 taken: it holds less than the export
    assert "not finished (again) yet: distill, teacher" in caplog.text
    assert files(export) == exported_files
    run_all(config, backend=backend)
    assert export_run(run, export) == {"round-1": sorted(stages(run))}
    changed = {name for name, data in files(export).items() if exported_files.get(name) != data}
    records = {"report.md", "accuracy.png", "training.png", "round-1/manifest.json", "round-1/stats.json", "round-1/state/teacher.json",
               "round-1/state/distill.json", "round-1/distill/metrics.jsonl.gz"}  # the retraining's own record: its times
    assert set(files(export)) == set(exported_files) and changed <= records, changed


def broken(an_export, tmp_path, breaks) -> Path:
    """A copy of the export, broken by ``breaks(copy)``."""
    copy = tmp_path / "export"
    shutil.copytree(an_export[1], copy)
    breaks(copy)
    return copy


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def escape_in_manifest(export: Path) -> None:
    edit_json(export / "round-1/manifest.json", lambda m: m["stages"].update({"../../escaped": m["stages"]["rollouts"]}))


def absolute_stage(export: Path) -> None:
    edit_json(export / "round-1/manifest.json", lambda m: m["stages"].update({str(export.parent / "escaped"): m["stages"]["rollouts"]}))


def absolute_round_folder(export: Path) -> None:
    rounds = {"rounds": 2, "rounds_data": "fresh", "stopped": None,
              "per_round": [{"round": 1, "folder": ".", "model": "m"}, {"round": 2, "folder": str(export.parent / "escaped"), "model": "m"}]}
    (export / "rounds.json").write_text(json.dumps(rounds))
    shutil.copytree(export / "round-1", export / "round-2")


def linked_state(export: Path) -> None:
    (export / "round-1/state/rollouts.json").unlink()
    (export / "round-1/state/rollouts.json").symlink_to(export.parent / "elsewhere.json")


@pytest.mark.parametrize("breaks, message", [
    (lambda export: shutil.rmtree(export), r"export: no such export folder"),
    (lambda export: shutil.rmtree(export / "round-1"), r"export: not an export of a run \(no rounds.json, no round-1/\)"),
    (lambda export: shutil.copytree(export / "round-1", export / "round-2"), r"export/rounds.json: missing; the export holds round-2"),
    (lambda export: (export / "round-1/stats.json").write_text("{torn"), r"export/round-1/stats.json: not a JSON file"),
    (lambda export: edit_json(export / "round-1/state/refine.json", lambda s: s.pop("inputs")), r"round-1/state/refine.json: records no inputs"),
    (escape_in_manifest, r"export/round-1/manifest.json: '../../escaped' is not the name of a stage"),
    (absolute_round_folder, r"export/rounds.json: round 2 must be listed as round 2 in folder 'round-2', not \(2, '/"),
    (absolute_stage, r"export/round-1/manifest.json: '/.*/escaped' is not the name of a stage"),
    (lambda export: (export / "round-1/state/mystery.json").write_text("{}"), r"round-1/state/mystery.json: 'mystery' is not the name of a stage"),
    (linked_state, r"export/round-1/state/rollouts.json: a link; an export holds plain files and folders only"),
], ids=["missing-folder", "no-round", "no-rounds-file", "bad-json", "no-inputs", "dotdot-stage", "absolute-round", "absolute-stage", "unknown-state",
                                                                                        "link"])
def test_a_bad_export_is_refused_naming_the_file_and_writing_nothing(an_export, tmp_path, capsys, breaks, message):
    run = an_export[0]
    export = broken(an_export, tmp_path, breaks)
    assert main(["restore", str(export), str(run)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ssb restore: error: ") and re.search(message, error), error
    assert not run.exists() and not run.with_name(run.name + ".restoring").exists()
    assert not list(tmp_path.parent.rglob("escaped*"))  # the pytest session's folder: the run's, this test's and the others'


def test_the_restore_goes_only_where_the_export_came_from_and_only_into_a_new_folder(an_export, tmp_path):
    run, export = an_export
    with pytest.raises(RunExportError, match=f"exported from {run}, .* not to {tmp_path / 'elsewhere'}"):
        restore_run(export, tmp_path / "elsewhere")
    run.mkdir()
    try:
        with pytest.raises(RunExportError, match=f"{run} exists: the restore writes only a new folder"):
            restore_run(export, run)
    finally:
        run.rmdir()


def test_an_export_goes_only_into_a_folder_of_its_own(an_export, tmp_path, capsys):
    run, export = an_export
    gone = run.with_name("gone")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    for args, message in [([str(tmp_path / "nothing"), str(tmp_path / "out")], f"{tmp_path / 'nothing'}: no such run folder"),
                          ([str(tmp_path / "empty"), str(tmp_path / "out")], f"{tmp_path / 'empty'}: not a run folder"),
                          ([str(gone), str(gone / "export")], f"{gone / 'export'}: an export goes into a folder apart from the run folder"),
                          ([str(gone), str(tmp_path / "notes")], f"{tmp_path / 'notes'}: holds todo.txt, which no export writes")]:
        assert main(["export", *args]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"ssb export: error: {message}"), error
    assert not (tmp_path / "out").exists() and not (gone / "export").exists() and sorted(os.listdir(tmp_path / "notes")) == ["todo.txt"]


def test_the_commands_say_what_they_do(capsys):
    for command in ("export", "restore"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: ssb export [-h] RUN_DIR OUT_DIR" in out and "no weights" in out
    assert "usage: ssb restore [-h] EXPORT_DIR RUN_DIR" in out and "must not exist" in out


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_export_restore_and_run_under_another_hash_seed_redo_nothing_but_the_weights(exported, tmp_path, hash_seed):
    """PEFT writes target_modules in set order, which follows the process's hash seed: the adapter config ssb saves is
    canonical, so the retrained adapter is the one the exported evaluations read, whatever the seed of the new process."""
    import subprocess
    import sys

    config, _, run, export, gone = exported
    assert main(["restore", str(export), str(run)]) == 0
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(dataclasses.asdict(config)))
    done = subprocess.run([sys.executable, "-m", "ssb", "run", "--config", str(config_file)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in WEIGHTS:
        assert sha(run / name) == sha(gone / name), name
    assert sha(run / "distill/adapter/adapter_config.json") == sha(gone / "distill/adapter/adapter_config.json")
    for stage in ("eval/base/gsm8k", "eval/ssb/gsm8k"):
        assert stages(run)[stage] == stages(gone)[stage], stage  # not evaluated again
