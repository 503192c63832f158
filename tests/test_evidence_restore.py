"""An iterated run exported (ssb export: ssb.runfolder.export, which studies/common/evidence_export.py rounds calls) and
rebuilt from its export alone (ssb restore, through studies/common/evidence_restore.py too), as a run that outlasts one
machine is: the weights are retrained bit for bit, everything else is skipped or resumed, and nothing exported is
computed again. The plain run's export and restore are in test_run_export.py."""

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import rounds_config, sha
from scripted import ScriptedBackend, rounds_script
from ssb.chat import ChatFormat
from ssb.models import load_tokenizer
from ssb.report.rounds import rounds_section
from ssb.run import run_all
from ssb.runfolder.artifacts import RunFolderError, read_jsonl
from ssb.runfolder.export import RunExportError, export_run, restore_run

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def study(script: str, *args) -> subprocess.CompletedProcess:
    """A study script's command line: ``python studies/SCRIPT ARGS...``."""
    return subprocess.run([sys.executable, str(STUDIES / script), *map(str, args)], capture_output=True, text=True)


WEIGHTS = ["distill/adapter/adapter_model.safetensors", "round-2/model/model.safetensors", "round-2/distill/adapter/adapter_model.safetensors"]


@pytest.fixture
def exported(tmp_path, tiny_model_dir):
    """Two rounds run and exported; the run folder then moved away (the machine that ran it is gone)."""
    config = rounds_config(tmp_path, tiny_model_dir, "run", rounds=2, **{"refine.chunk_questions": 2})  # refine journals in several chunks
    backend = ScriptedBackend(ChatFormat(load_tokenizer(config.model)), rounds_script)
    run_all(config, backend=backend)
    run, results = Path(config.run_dir), tmp_path / "results"
    export_run(run, results / "arm")
    run.rename(tmp_path / "gone")
    return config, backend, run, results, tmp_path / "gone"


def manifests(run: Path) -> dict:
    return {folder: json.loads((run / folder / "manifest.json").read_text())["stages"] for folder in (".", "round-2")}


def test_a_restored_run_retrains_the_same_weights_and_computes_nothing_else_again(exported):
    config, backend, run, results, gone = exported
    restore_run(results / "arm", run)
    assert not (run / "distill").exists() and not (run / "round-2/model").exists()  # no weights came back
    assert {"teacher", "distill"}.isdisjoint(manifests(run)["."]) and "merge" in manifests(run)["round-2"]
    exported_files = {path: path.read_bytes() for path in (results / "arm").rglob("*") if path.is_file()}
    export_run(run, results / "arm")  # a checkpoint before the weights are retrained: the export keeps what it has
    assert {path: path.read_bytes() for path in (results / "arm").rglob("*") if path.is_file()} == exported_files
    calls = len(backend.calls)
    run_all(config, backend=backend)
    assert len(backend.calls) == calls  # rollouts and refinements of both rounds were skipped
    for name in WEIGHTS:
        assert sha(run / name) == sha(gone / name), name
    before, after = manifests(gone), manifests(run)
    for folder in before:
        assert set(after[folder]) == set(before[folder])
        for stage in ("rollouts", "refine", "eval/ssb/gsm8k"):  # not finished again: same entry, timestamps included
            assert after[folder][stage] == before[folder][stage], (folder, stage)
        assert after[folder]["distill"]["inputs"] == before[folder]["distill"]["inputs"]
        assert after[folder]["distill"]["finished"] != before[folder]["distill"]["finished"]  # retrained


def test_a_retraining_that_comes_out_otherwise_stops_the_run_and_is_not_exported(exported):
    config, backend, run, results, gone = exported
    round_1, adapter = results / "arm" / "round-1", gone / "distill/adapter/adapter_model.safetensors"
    for path in (round_1 / "manifest.json", round_1 / "state/eval/ssb/gsm8k.json"):  # evaluated with another adapter than retraining gives
        path.write_text(path.read_text().replace(sha(adapter)[:16], "0" * 16))
    exported_files = {path: path.read_bytes() for path in (results / "arm").rglob("*") if path.is_file()}
    restore_run(results / "arm", run)
    with pytest.raises(RunFolderError, match=r"stage 'eval/ssb/gsm8k' was started with other inputs[\s\S]*adapter_sha256: '0{16}' -> "):
        run_all(config, backend=backend)
    assert sha(run / "distill/adapter/adapter_model.safetensors") == sha(adapter)  # retrained, and evaluated nowhere
    assert not (run / "round-2/model").exists()  # nothing built on it
    export_run(run, results / "arm")
    assert {path: path.read_bytes() for path in (results / "arm").rglob("*") if path.is_file()} == exported_files


def test_a_round_exported_mid_stage_resumes_from_its_journal(exported):
    config, backend, run, results, gone = exported
    round_2 = results / "arm" / "round-2"
    manifest = json.loads((round_2 / "manifest.json").read_text())
    for stage in ("refine", "teacher", "distill", "eval/ssb/gsm8k"):  # as exported while refine was under way
        del manifest["stages"][stage]
    (round_2 / "manifest.json").write_text(json.dumps(manifest))
    for name in ("teacher", "student", "dropped"):
        (round_2 / f"{name}.jsonl.gz").unlink()
    shutil.rmtree(round_2 / "eval")
    journal = read_jsonl(gone / "round-2/refinements.jsonl")
    refined = [r for r in journal if "selection" in r]  # the mixed questions, journalled after the others, chunk by chunk
    assert len(refined) >= 4  # two chunks at least
    kept = [r for r in journal if "selection" not in r] + refined[:2]  # ... of which the first chunk was journalled
    with gzip.open(round_2 / "refinements.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in kept) + '{"torn')
    restore_run(results / "arm", run)
    assert (run / "round-2/.ssb/refine.json").exists() and "refine" not in manifests(run)["round-2"]
    calls = len(backend.calls)
    run_all(config, backend=backend)
    generated = [conversation for prompts, _ in backend.calls[calls:] for conversation in prompts]
    assert all(c[-1]["content"].startswith("We have two sample responses") for c in generated)  # no rollouts again
    assert len(generated) == len(refined) - 2  # only the chunks that were not journalled
    for name in ("refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl", "distill/adapter/adapter_model.safetensors"):
        assert sha(run / "round-2" / name) == sha(gone / "round-2" / name), name


def test_the_restore_goes_only_where_the_export_came_from_and_only_into_a_new_folder(exported):
    _, _, run, results, _ = exported
    with pytest.raises(RunExportError, match=f"exported from {run}, .* not to {run.parent / 'elsewhere'}"):
        restore_run(results / "arm", run.parent / "elsewhere")
    done = study("common/evidence_restore.py", "arm", run.parent / "elsewhere", "--results", results)  # the study's command says so too
    assert done.returncode == 1 and re.search(f"exported from {run}, .* not to {run.parent / 'elsewhere'}", done.stderr)
    run.mkdir()
    with pytest.raises(RunExportError, match=f"{run} exists"):
        restore_run(results / "arm", run)
    done = study("common/evidence_restore.py", "missing", run, "--results", results)
    assert done.returncode == 1 and "no rounds.json" in done.stderr


def test_the_study_commands_write_what_ssb_export_and_restore_write(exported):
    """evidence_export.py rounds NAME RUN_DIR is ssb export RUN_DIR results/NAME, and evidence_restore.py NAME RUN_DIR is
    ssb restore results/NAME RUN_DIR; both take iterated runs only."""
    _, _, run, results, gone = exported
    assert study("common/evidence_export.py", "rounds", "again", gone, "--results", results).returncode == 0
    files = {path.relative_to(results / "arm"): path.read_bytes() for path in (results / "arm").rglob("*") if path.is_file()}
    assert {path.relative_to(results / "again"): path.read_bytes() for path in (results / "again").rglob("*") if path.is_file()} == files
    done = study("common/evidence_restore.py", "again", run, "--results", results)
    assert done.stdout == ("round 1: eval/base/gsm8k, eval/ssb/gsm8k, refine, rollouts restored\n"
                           "round 2: eval/ssb/gsm8k, merge, refine, rollouts restored\n"), done.stderr
    (gone / "rounds.json").unlink()
    done = study("common/evidence_export.py", "rounds", "plain", gone, "--results", results)
    assert done.returncode == 1 and "no rounds.json; not an iterated run" in done.stderr


def test_one_round_comes_back_as_a_plain_run_folder_anywhere(exported, tmp_path):
    """evidence_restore.py --round R: round R of an export alone, into a new folder of any name (onpolicy.sh data)."""
    _, _, _, results, gone = exported
    done = study("common/evidence_restore.py", "--round", 1, "arm", tmp_path / "data", "--results", results)
    assert done.stdout == "round 1: eval/base/gsm8k, eval/ssb/gsm8k, refine, rollouts restored\n", done.stderr
    for name in ("rollouts.jsonl", "refinements.jsonl", "teacher.jsonl", "student.jsonl", "eval/ssb/gsm8k.samples.jsonl"):
        assert sha(tmp_path / "data" / name) == sha(gone / name), name
    assert not (tmp_path / "data" / "rounds.json").exists() and not (tmp_path / "data" / "round-2").exists()
    done = study("common/evidence_restore.py", "--round", 1, "arm", tmp_path / "data", "--results", results)
    assert done.returncode == 1 and "exists" in done.stderr
    done = study("common/evidence_restore.py", "--round", 3, "arm", tmp_path / "more", "--results", results)
    assert done.returncode == 1 and "no such exported round" in done.stderr


def test_the_rounds_report_recomputed_from_exports_is_the_run_folders(exported, tmp_path):
    """studies/rounds/rounds_recompute.py: the exported rounds alone give the run folder's own per-round table and paired
    differences; two arms add round r of one against round r of the other."""
    _, _, _, results, gone = exported
    (tmp_path / "own").mkdir()
    own = rounds_section(gone, tmp_path / "own")
    assert study("rounds/rounds_recompute.py", "--out", tmp_path / "one", "--results", results, "arm").returncode == 0
    report = (tmp_path / "one" / "report.md").read_text()
    assert report[report.index("## Rounds"):] == "\n".join(own) and (tmp_path / "one/rounds.png").stat().st_size > 0
    shutil.copytree(results / "arm", results / "again")  # the same rounds under another name: every paired difference is zero
    assert study("rounds/rounds_recompute.py", "--out", tmp_path / "two", "--results", results, "arm", "again").returncode == 0
    both = (tmp_path / "two" / "report.md").read_text()
    across = [line for line in both.splitlines() if line.startswith("| round ") and ": arm - again |" in line]
    assert [line.split(" | ")[0] for line in across] == ["| round 1: arm - again", "| round 2: arm - again"]
    assert all(" | +0.0 | [+0.0, +0.0] | 0 / 0 " in line for line in across), across
    done = study("rounds/rounds_recompute.py", "--out", tmp_path / "three", "--results", results, "missing")
    assert done.returncode == 1 and "no rounds.json" in done.stderr


def test_an_iterated_run_restored_and_rerun_under_another_hash_seed_redoes_nothing_but_the_weights(exported):
    """As the plain run's (test_run_export.py): each round's adapter config is canonical, so a new process, whatever its
    hash seed, retrains each round's adapter and merge into what the exported evaluations read, and goes no further."""
    import dataclasses
    import os
    import subprocess
    import sys

    import yaml

    config, _, run, results, gone = exported
    restore_run(results / "arm", run)
    config_file = run.parent / "config.yaml"
    config_file.write_text(yaml.safe_dump(dataclasses.asdict(config)))
    done = subprocess.run([sys.executable, "-m", "ssb", "run", "--config", str(config_file)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "3"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in WEIGHTS:
        assert sha(run / name) == sha(gone / name), name
    for folder in (".", "round-2"):
        evaluations = {stage for stage in manifests(gone)[folder] if stage.startswith("eval/")}
        assert {s: manifests(run)[folder][s] for s in evaluations} == {s: manifests(gone)[folder][s] for s in evaluations}, folder
