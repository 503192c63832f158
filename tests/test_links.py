"""ssb never writes through a link: a journal, a JSON document, an export's file or a restore's staging folder where a link
stands is refused with one line naming the link, and the file the link points to is left as it was."""

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import phase1_folder, write_benchmark
from ssb.cli import main
from ssb.runfolder.artifacts import JsonlAppender, RunFolderError, repair_jsonl_tail, write_json_atomic
from test_file_errors import cli_args, one_error_line
from test_run_export import finished_run


def outside_file(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / "precious.txt"
    target.parent.mkdir()
    target.write_text("the user's own file\n")
    return target


def test_a_journal_or_document_where_a_link_stands_is_refused_and_the_target_kept(tmp_path):
    target = outside_file(tmp_path)
    for write in (lambda p: JsonlAppender(p), lambda p: write_json_atomic(p, {"a": 1}), repair_jsonl_tail):
        link = tmp_path / "run" / "rollouts.jsonl"
        link.parent.mkdir(exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        target.write_text('{"torn": ')  # a torn tail that repair_jsonl_tail would otherwise cut off the target
        with pytest.raises(RunFolderError, match=rf"^{link}: a link \(to {target}\); ssb does not write through links"):
            write(link)
        assert target.read_text() == '{"torn": ' and link.is_symlink()


def test_ssb_rollouts_refuses_a_linked_journal_naming_it(tmp_path, tiny_model_dir, capsys):
    config = phase1_folder(tmp_path, tiny_model_dir, run="first")  # for its data file and flags
    target = outside_file(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "rollouts.jsonl").symlink_to(target)
    flags = [flag if not flag.startswith("--run_dir=") else f"--run_dir={run}" for flag in cli_args(config)]
    assert main(["rollouts", *flags, "--data.limit=2", "--rollouts.sampling.max_new_tokens=2"]) == 2
    line = one_error_line(capsys, "rollouts")
    assert f"{run / 'rollouts.jsonl'}: a link (to {target})" in line
    assert target.read_text() == "the user's own file\n"


def test_a_linked_folder_inside_a_run_folder_stops_a_stage_before_it_writes(tmp_path, tiny_model_dir, capsys):
    config = phase1_folder(tmp_path, tiny_model_dir)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (Path(config.run_dir) / "eval").symlink_to(outside)
    write_benchmark(tmp_path / "bench", "gsm8k", 2)
    flags = ["--eval.limit=1", "--benchmarks=gsm8k", "--max-new-tokens=4", f"--data.data_dir={tmp_path / 'bench'}"]
    assert main(["eval", *cli_args(config), *flags]) == 2
    assert f"{Path(config.run_dir) / 'eval'}: a link (to {outside})" in one_error_line(capsys, "eval")
    assert list(outside.iterdir()) == []


@pytest.fixture(scope="module")
def a_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("linked")
    return finished_run(folder, tiny_model_dir)[2]


def test_an_export_writes_nothing_through_a_link_in_its_folder(a_run, tmp_path):
    from ssb.runfolder.export import RunExportError, export_run

    target = outside_file(tmp_path)
    out = tmp_path / "export"
    (out / "round-1").mkdir(parents=True)
    (out / "round-1" / "rollouts.jsonl.gz").symlink_to(target)
    with pytest.raises(RunFolderError, match=f"^{out / 'round-1' / 'rollouts.jsonl.gz'}: a link"):
        export_run(a_run, out)
    assert target.read_text() == "the user's own file\n"
    (out / "round-1" / "rollouts.jsonl.gz").unlink()
    (a_run / "eval" / "base" / "elsewhere.samples.jsonl").symlink_to(target)  # nor does it carry a file a link leads to
    with pytest.raises(RunFolderError, match="elsewhere.samples.jsonl: a link"):
        export_run(a_run, out)
    (a_run / "eval" / "base" / "elsewhere.samples.jsonl").unlink()
    with pytest.raises(RunExportError, match="no such run folder"):  # the run folder is untouched by the refusals
        export_run(tmp_path / "none", out)


def restorable(a_run, tmp_path) -> tuple[Path, Path]:
    """An export of ``a_run`` and the (now free) path it must be restored to."""
    from ssb.runfolder.export import export_run

    export_run(a_run, tmp_path / "export")
    moved = tmp_path / "moved"
    a_run.rename(moved)
    return tmp_path / "export", moved


def test_restore_never_deletes_or_writes_through_what_stands_beside_the_run_folder(a_run, tmp_path):
    from ssb.runfolder.export import restore_run

    export, moved = restorable(a_run, tmp_path)
    try:
        # What a restore once took as its own staging folder: a user's folder, and a link to another one.
        users = a_run.with_name(a_run.name + ".restoring")
        users.mkdir()
        (users / "notes.txt").write_text("keep me\n")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        linked = a_run.with_name(a_run.name + ".restoring")
        restore_run(export, a_run)
        assert (users / "notes.txt").read_text() == "keep me\n"
        assert a_run.is_dir() and not a_run.is_symlink() and (a_run / "rollouts.jsonl").is_file()
        assert not [p for p in a_run.parent.iterdir() if p.name.startswith(f".{a_run.name}.restoring")]  # its staging folder went
        assert (a_run / "stats.json").stat().st_mode & 0o777 == 0o666 & ~current_umask()
        users.rename(tmp_path / "users")
        linked.symlink_to(elsewhere)
        os.rename(a_run, tmp_path / "restored-once")
        restore_run(export, a_run)
        assert list(elsewhere.iterdir()) == [] and not a_run.is_symlink()
        linked.unlink()
    finally:  # the module's run back as it was, weights and all
        if a_run.exists():
            shutil.rmtree(a_run)
        moved.rename(a_run)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_export_into_another_runs_export_is_refused(a_run, tmp_path, tiny_model_dir, capsys):
    from ssb.runfolder.export import export_run

    other = finished_run(tmp_path, tiny_model_dir)[2]  # the same recipe, run again: another run
    export_run(a_run, tmp_path / "export")
    before = {p: p.read_bytes() for p in (tmp_path / "export").rglob("*") if p.is_file()}
    assert main(["export", str(other), str(tmp_path / "export")]) == 2
    line = one_error_line(capsys, "export")
    assert f"{tmp_path / 'export'}: holds the export of another run (" in line
    assert {p: p.read_bytes() for p in (tmp_path / "export").rglob("*") if p.is_file()} == before
    assert main(["export", str(a_run), str(tmp_path / "export")]) == 0  # the run's own export is brought up to date


def test_an_export_carries_only_files_as_their_stage_recorded_them(a_run, tmp_path, capsys):
    samples = a_run / "eval" / "base" / "gsm8k.samples.jsonl"
    original = samples.read_bytes()
    try:
        records = [json.loads(line) for line in original.splitlines()]
        for record in records:
            for completion in record["completions"]:
                completion["correct"] = True
        samples.write_text("".join(json.dumps(r) + "\n" for r in records))
        assert main(["export", str(a_run), str(tmp_path / "export")]) == 2
        assert f"{samples}: has changed since the stage that wrote it finished" in one_error_line(capsys, "export")
        assert main(["report", str(a_run), "--out", str(tmp_path / "report")]) == 2
        line = one_error_line(capsys, "report")
        assert line.startswith(f"ssb report: error: {samples}: has ") and "since stage 'eval/base/gsm8k' wrote it" in line
        assert not (tmp_path / "report" / "report.md").exists()
    finally:
        samples.write_bytes(original)
    assert main(["report", str(a_run), "--out", str(tmp_path / "report")]) == 0


def test_the_lock_is_never_taken_through_a_link(tmp_path, capsys):
    from ssb.runfolder.lock import hold_run_folder

    target = outside_file(tmp_path)
    for linked, link_to in ((".ssb/lock", target), (".ssb", target.parent)):
        run = tmp_path / f"run-{linked.replace('/', '-')}"
        (run / ".ssb").mkdir(parents=True, exist_ok=True)
        if linked == ".ssb":
            (run / ".ssb").rmdir()
        (run / linked).symlink_to(link_to)
        with pytest.raises(RunFolderError, match=f"^{run / linked}: a link"):
            with hold_run_folder(run):
                pass
        assert target.read_text() == "the user's own file\n" and sorted(p.name for p in target.parent.iterdir()) == ["precious.txt"]


def test_a_report_reads_nothing_a_link_in_the_run_folder_leads_to(a_run, tmp_path, capsys):
    link = a_run / "eval" / "base" / "other.summary.json"
    link.symlink_to(a_run / "eval" / "base" / "gsm8k.summary.json")
    try:
        assert main(["report", str(a_run), "--out", str(tmp_path / "report")]) == 2
        assert one_error_line(capsys, "report").startswith(f"ssb report: error: {link}: a link")
    finally:
        link.unlink()


def test_an_export_of_a_run_sharing_phase_1_with_another_is_refused_by_where_it_ran(a_run, tmp_path):
    """Studies copy one phase 1 into each arm's folder: the copies share their stages' start times, and an arm not trained
    yet records no adapter. The folder its manifest names (the config's run_dir) tells them apart."""
    from ssb.runfolder.export import RunExportError, export_run

    export_run(a_run, tmp_path / "export")
    other = tmp_path / "other-arm"
    shutil.copytree(a_run, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["stages"] = {stage: entry for stage, entry in manifest["stages"].items() if stage in ("rollouts", "refine")}
    manifest["run_dir"] = str(other)  # as its own next stage records it
    (other / "manifest.json").write_text(json.dumps(manifest))
    for stage in ("teacher", "distill", "eval"):
        shutil.rmtree(other / ".ssb" / stage, ignore_errors=True)
        (other / ".ssb" / f"{stage}.json").unlink(missing_ok=True)
    with pytest.raises(RunExportError, match=rf"holds the export of another run \(run in {a_run} there, {other} here\)"):
        export_run(other, tmp_path / "export")
    assert json.loads((a_run / "manifest.json").read_text())["run_dir"] == str(a_run)
