"""One process per run folder: real processes hold, contend for and crash out of the lock."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ssb
from ssb.runfolder.artifacts import RunFolderError
from ssb.runfolder.lock import hold_run_folder

# Holds the folder argv[1] until its stdin closes; says "held" once it has it.
HOLDER = """
import sys
from ssb.runfolder.lock import hold_run_folder
with hold_run_folder(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""

# Takes and drops the folder argv[1]; exit code 3 and the error on stdout if someone else has it.
TRY_ONCE = """
import sys
from ssb.runfolder.artifacts import RunFolderError
from ssb.runfolder.lock import hold_run_folder
try:
    with hold_run_folder(sys.argv[1]):
        print("acquired")
except RunFolderError as exc:
    print(exc)
    sys.exit(3)
"""


# What torchrun's agent sets in each process it starts, beside RANK and LOCAL_RANK.
LAUNCH = {"TORCHELASTIC_RUN_ID": "job-1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "2"}


def _env(**extra) -> dict:
    """The children import this checkout's ssb, offline, as a process of no launch unless told otherwise."""
    launched = {"RANK", "LOCAL_RANK", *LAUNCH}
    env = {key: value for key, value in os.environ.items() if key not in launched}
    src = str(Path(ssb.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


def _start_holder(run_dir: Path, **env) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env(**env))
    line = holder.stdout.readline()
    if line != "held\n":
        holder.kill()
        holder.wait()
        pytest.fail(f"the holder process did not get the lock (said {line!r})")
    return holder


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def _try_once(run_dir: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRY_ONCE, str(run_dir)], check=False, capture_output=True, text=True, env=_env(**env), timeout=30)


def _holder_pid(run_dir: Path) -> int:
    return json.loads((run_dir / ".ssb" / "lock").read_text())["pid"]


# RANK and WORLD_SIZE left in a shell by a cluster launcher make no process a follower of the holder.
@pytest.mark.parametrize("env", [{}, {"RANK": "1", "WORLD_SIZE": "2"}], ids=["plain", "rank-variables-left-over"])
def test_second_ssb_process_stops_naming_the_holder(tmp_path, env):
    run_dir = tmp_path / "run"
    holder = _start_holder(run_dir)
    try:
        # Without the lock this child would get as far as loading data and fail on the missing file.
        second = subprocess.run([sys.executable, "-m", "ssb", "rollouts", "--force", "--run_dir", str(run_dir), "--data.data_dir",
                                 str(tmp_path / "no-data")], check=False, capture_output=True, text=True, env=_env(**env), timeout=60)
    finally:
        _stop(holder)
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith(f"ssb rollouts: error: {run_dir} is in use by pid {holder.pid} on host ")
    assert "wait for it to finish or stop it" in second.stderr
    assert not (run_dir / "rollouts.jsonl").exists() and not (run_dir / "manifest.json").exists()


def test_a_crashed_holder_releases_the_lock(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    run_dir = tmp_path / "run"
    holder = _start_holder(run_dir)
    try:
        assert _holder_pid(run_dir) == holder.pid
        with pytest.raises(RunFolderError, match=f"in use by pid {holder.pid} "), hold_run_folder(run_dir):
            pass
        holder.kill()  # SIGKILL: no cleanup code of the holder runs
        holder.wait(timeout=10)
        successor = _start_holder(run_dir)
        try:
            assert _holder_pid(run_dir) == successor.pid
        finally:
            _stop(successor)
    finally:
        _stop(holder)


def test_reentrant_within_a_process_and_released_after_the_outer_block(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    run_dir = tmp_path / "run"
    with hold_run_folder(run_dir):
        with hold_run_folder(tmp_path / "." / "run"):  # the same folder, spelled differently
            assert _holder_pid(run_dir) == os.getpid()
        other = _try_once(run_dir)
        assert other.returncode == 3 and f"in use by pid {os.getpid()} " in other.stdout
        (run_dir / ".ssb" / "lock").write_text("")  # a holder that has not described itself yet
        other = _try_once(run_dir)
        assert other.returncode == 3 and "in use by another process (no readable description" in other.stdout
    after = _try_once(run_dir)
    assert after.returncode == 0 and after.stdout == "acquired\n", after.stdout + after.stderr


def test_other_folders_are_free_and_rank_variables_alone_exempt_no_one(tmp_path):
    holder = _start_holder(tmp_path / "a")
    try:
        other_folder = _try_once(tmp_path / "b")
        # Each of these is a process of its own, whatever its environment says: no process group, no launch holds the folder.
        tried = {"rank 1 of 2": _try_once(tmp_path / "a", RANK="1", WORLD_SIZE="2"),
                 "rank 0 of 2": _try_once(tmp_path / "a", RANK="0", WORLD_SIZE="2"),
                 "rank 1 alone": _try_once(tmp_path / "a", RANK="1"),
                 "a launch's variables": _try_once(tmp_path / "a", RANK="1", LOCAL_RANK="1", **LAUNCH)}
    finally:
        _stop(holder)
    assert other_folder.returncode == 0, other_folder.stdout + other_folder.stderr
    for what, result in tried.items():
        assert result.returncode == 3 and f"in use by pid {holder.pid} " in result.stdout, (what, result.stdout + result.stderr)


# A shell in which a launch's variables were left exported: `RANK=0 python holder.py RUN &`, then `RANK=1 python try.py RUN`.
SHELL = """
import os, subprocess, sys
holder_code, try_code, run_dir = sys.argv[1:]
holder = subprocess.Popen([sys.executable, "-c", holder_code, run_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "RANK": "0"})
said = holder.stdout.readline()
second = subprocess.run([sys.executable, "-c", try_code, run_dir], capture_output=True, text=True, env={**os.environ, "RANK": "1"})
holder.stdin.close()
holder.wait()
print(said + second.stdout + second.stderr, end="")
sys.exit(second.returncode)
"""


def test_ranks_started_from_one_shell_are_not_a_launch(tmp_path):
    """Two processes with a launch's variables share a parent, as a launch's ranks do, but that parent is a shell,
    not a launcher: the one with RANK=1 is refused."""
    run_dir = tmp_path / "run"
    shell = subprocess.run([sys.executable, "-c", SHELL, HOLDER, TRY_ONCE, str(run_dir)], check=False, capture_output=True, text=True,
                           env=_env(LOCAL_RANK="0", **LAUNCH), timeout=60)
    said, _, second = shell.stdout.partition("\n")
    holder = json.loads((run_dir / ".ssb" / "lock").read_text())
    assert said == "held", shell.stdout + shell.stderr
    assert shell.returncode == 3 and f"is in use by pid {holder['pid']} " in second, shell.stdout + shell.stderr
    assert holder["launch"] is None  # rank 0 recorded no launch for another process to match


# Run by torchrun as 2 ranks on the folder argv[1]: each enters as the CLI does, before the process group exists. Inside,
# rank 1 tries the folder again from a process of its own (argv[2], which has the launch's variables but not the launcher
# for a parent) and under another launch's variables; once the group is up, it enters again with nothing but the group to
# say it is rank 0's (its launch no longer matches).
LAUNCHED = """
import os, subprocess, sys
import torch.distributed as dist
from ssb.runfolder.artifacts import RunFolderError
from ssb.runfolder.lock import hold_run_folder

run_dir, try_once = sys.argv[1:]
rank = int(os.environ["RANK"])
with hold_run_folder(run_dir):
    print(f"rank {rank}: in beside its rank 0", flush=True)
    if rank == 1:
        child = subprocess.run([sys.executable, "-c", try_once, run_dir], capture_output=True, text=True)
        print(f"rank 1's child: {child.returncode} {child.stdout.split(' on host ')[0]}", flush=True)
        port = os.environ["MASTER_PORT"]
        os.environ["MASTER_PORT"] = "1"
        try:
            with hold_run_folder(run_dir):
                print("rank 1: in under another launch's variables", flush=True)
        except RunFolderError as exc:
            print(f"rank 1 under another launch's variables: {str(exc).split(' on host ')[0]}", flush=True)
        os.environ["MASTER_PORT"] = port
    dist.init_process_group("gloo")
    dist.barrier()  # rank 0 holds the folder until the second barrier
    if rank == 1:
        del os.environ["TORCHELASTIC_RUN_ID"]
        with hold_run_folder(run_dir):
            print("rank 1: in by its process group", flush=True)
    dist.barrier()
    dist.destroy_process_group()
"""


def test_the_ranks_of_a_real_launch_share_the_folder_their_rank_zero_holds(tmp_path):
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    run_dir = tmp_path / "run"
    launch = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                             str(run_dir), TRY_ONCE], check=False, capture_output=True, text=True, env=_env(), timeout=120)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    rank_zero = json.loads((run_dir / ".ssb" / "lock").read_text())
    refused = f"{run_dir} is in use by pid {rank_zero['pid']}"
    assert sorted(launch.stdout.splitlines()) == sorted([
        "rank 0: in beside its rank 0", "rank 1: in beside its rank 0", f"rank 1's child: 3 {refused}",
        f"rank 1 under another launch's variables: {refused}", "rank 1: in by its process group"]), launch.stdout


def test_a_command_on_a_round_folder_stops_while_its_run_is_held(tmp_path):
    """``ssb run --rounds 3`` holds RUN; ``ssb rollouts --run_dir RUN/round-2`` meanwhile would double round 2's rollouts."""
    run_dir = tmp_path / "run"
    holder = _start_holder(run_dir)
    try:
        second = subprocess.run([sys.executable, "-m", "ssb", "rollouts", "--run_dir", str(run_dir / "round-2"),
                                 "--data.data_dir", str(tmp_path / "no-data")], check=False, capture_output=True, text=True, env=_env(), timeout=60)
        deeper = _try_once(run_dir / "round-2" / "x")
    finally:
        _stop(holder)
    assert second.returncode == 2, second.stderr
    inside = f"{run_dir / 'round-2'} is inside the run folder {run_dir}, which is in use by pid {holder.pid} "
    assert second.stderr.startswith(f"ssb rollouts: error: {inside}")
    assert not (run_dir / "round-2").exists()  # refused before anything was written there
    assert deeper.returncode == 3 and f"inside the run folder {run_dir}, which is in use by pid {holder.pid} " in deeper.stdout
    after = _try_once(run_dir / "round-2")  # the run is over: the round folder is free
    assert after.returncode == 0, after.stdout + after.stderr


def test_the_rounds_driver_holds_each_round_folder_while_it_runs_it(tmp_path, monkeypatch):
    """A command that got to round 2's folder first stops the run there; while round 2 runs, the driver holds its folder."""
    from helpers import rounds_config
    from ssb import rounds

    monkeypatch.delenv("RANK", raising=False)
    config = rounds_config(tmp_path, "unused-model", "run", rounds=2)
    run_dir = Path(config.run_dir)
    seen = []

    def fake_stages(current, force, backend, with_base):
        seen.append((current.run_dir, _try_once(Path(current.run_dir))))
        return {"wall_s": {}, "pass@1": None, "stopped": None}

    monkeypatch.setattr(rounds, "merge_round_model", lambda previous, into: "merged-model")
    monkeypatch.setattr(rounds, "run_stages", fake_stages)
    monkeypatch.setattr(rounds, "write_report", lambda run: Path(run) / "report.md")
    holder = _start_holder(run_dir / "round-2")
    try:
        with pytest.raises(RunFolderError, match=f"round-2 is in use by pid {holder.pid} "):
            rounds.run_rounds(config, force=set())
    finally:
        _stop(holder)
    assert [folder for folder, _ in seen] == [str(run_dir)]  # round 1 ran; round 2 never started
    seen.clear()
    rounds.run_rounds(config, force=set())
    assert [folder for folder, _ in seen] == [str(run_dir), str(run_dir / "round-2")]
    for _, other in seen:  # another process, tried while each round ran, was refused naming this one
        assert other.returncode == 3 and f"in use by pid {os.getpid()} " in other.stdout
