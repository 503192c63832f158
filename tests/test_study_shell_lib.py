"""studies/common/lib.sh, the study drivers' shell helpers: copy_once, step and commit, run by bash in a scratch git
repository with ``ssb`` replaced by a log of its calls."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "studies" / "common" / "lib.sh"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def driver(root: Path, body: str, **env: str) -> subprocess.CompletedProcess:
    """``body`` run as a driver runs it: from the repository root, after ``. studies/common/lib.sh``."""
    (root / "studies" / "common").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LIB, root / "studies" / "common" / "lib.sh")
    (root / "bin").mkdir(exist_ok=True)
    (root / "bin" / "ssb").write_text('#!/usr/bin/env bash\necho "ssb $*" >> calls\n')
    (root / "bin" / "ssb").chmod(0o755)
    script = f"set -euo pipefail\nresults=study/results study='A study'\n. studies/common/lib.sh\n{body}\n"
    environment = {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "-c", script], cwd=root, env=environment, capture_output=True, text=True)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def test_copy_once_copies_a_run_folder_once_without_its_lock(tmp_path):
    run = tmp_path / "runs" / "a"
    (run / ".ssb").mkdir(parents=True)
    (run / ".ssb" / "lock").write_text('{"pid": 1}')
    (run / "rollouts.jsonl").write_text("{}\n")
    (tmp_path / "runs" / "b.partial").mkdir()  # an interrupted copy: replaced, never taken for a finished one
    (tmp_path / "runs" / "b.partial" / "stale").write_text("")
    done = driver(tmp_path, "copy_once runs/a runs/b")
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "runs" / "b"
    assert (copy / "rollouts.jsonl").read_text() == "{}\n" and not (copy / ".ssb" / "lock").exists() and not (copy / "stale").exists()
    assert (run / ".ssb" / "lock").exists() and not (tmp_path / "runs" / "b.partial").exists()
    (run / "refinements.jsonl").write_text("{}\n")
    assert driver(tmp_path, "copy_once runs/a runs/b").returncode == 0
    assert not (copy / "refinements.jsonl").exists()  # a finished copy is kept as it is


def test_step_logs_and_runs_ssb(tmp_path):
    done = driver(tmp_path, 'step eval --config evidence --eval.benchmarks "[gsm8k]"')
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls").read_text() == "ssb eval --config evidence --eval.benchmarks [gsm8k]\n"
    assert "ssb eval --config evidence" in done.stderr


def test_commit_commits_the_results_folder_alone_and_only_when_asked(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "study@example.com")
    git(tmp_path, "config", "user.name", "study")
    (tmp_path / "study" / "results").mkdir(parents=True)
    (tmp_path / "study" / "results" / "arm.json").write_text("{}\n")
    (tmp_path / "elsewhere.txt").write_text("staged by hand\n")
    git(tmp_path, "add", "elsewhere.txt")
    assert driver(tmp_path, 'commit "not asked"').returncode == 0
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True).returncode != 0  # no commit yet
    done = driver(tmp_path, 'commit "the first arm"', EVIDENCE_COMMIT="1")
    assert done.returncode == 0, done.stderr
    assert git(tmp_path, "log", "--format=%s").splitlines() == ["A study: the first arm"]
    assert git(tmp_path, "show", "--name-only", "--format=", "HEAD").split() == ["study/results/arm.json"]
    assert git(tmp_path, "diff", "--cached", "--name-only").split() == ["elsewhere.txt"]  # still staged, not committed
    assert driver(tmp_path, 'commit "nothing new"', EVIDENCE_COMMIT="1").returncode == 0  # nothing to commit is no failure
    assert len(git(tmp_path, "log", "--format=%s").splitlines()) == 1
