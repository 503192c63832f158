"""Every benchmark and study script answers ``--help``, run as its documentation runs it: ``python SCRIPT --help`` from the
repository root, on the installed package, with no ``PYTHONPATH`` (a script that reached into the tests' or another
folder's modules, or edited ``sys.path`` to find them, fails here first)."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.relative_to(ROOT).as_posix() for path in [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("studies/**/*.py")])


def help_of(script: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """Each script's --help, run side by side: most of a script's second or two is importing torch, one core each."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return dict(zip(SCRIPTS, pool.map(help_of, SCRIPTS)))


def test_the_scripts_are_found():
    assert "benchmarks/teacher_targets_and_memory.py" in SCRIPTS and "studies/evidence/evidence_recompute.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_answers_help(helps, script):
    done = helps[script]
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), f"{script} --help printed nothing"
