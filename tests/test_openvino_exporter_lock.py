"""The OpenVINO exporter environment is the lock file's packages, each pinned with its hashes; a changed lock
is a new environment and new exports. Nothing here builds the environment (it would download a gigabyte)."""

import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ssb.generation import openvino_export
from ssb.generation.openvino_export import (
    EXPORTER_DEPENDENCIES,
    EXPORTER_LOCK,
    EXPORTER_PACKAGES,
    SHARED_PACKAGES,
    export_key,
    exporter_python,
    read_exporter_lock,
)


def test_the_lock_pins_every_package_the_exporter_needs_with_its_hashes():
    entries = read_exporter_lock(EXPORTER_LOCK.read_text(encoding="utf-8"))
    names = [canonicalize_name(entry["name"]) for entry in entries]
    versions = {name: entry["version"] for name, entry in zip(names, entries)}
    assert len(set(zip(names, (e["marker"] for e in entries)))) == len(entries)  # one line per package (and platform)
    for wanted in EXPORTER_PACKAGES + EXPORTER_DEPENDENCIES:  # each at a version its requirement allows
        requirement = Requirement(wanted)
        assert requirement.specifier.contains(versions[canonicalize_name(requirement.name)]), wanted
    for must in ("optimum-intel", "optimum", "transformers", "nncf", "tokenizers", "huggingface-hub", "numpy", "safetensors"):
        assert must in versions, must
    assert not SHARED_PACKAGES & set(names)  # those come from ssb's own environment
    assert all(len(entry["hashes"]) >= 1 for entry in entries)


def test_a_lock_line_without_an_exact_pin_or_a_hash_is_refused():
    good = "tokenizers==0.22.2 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
    marked = 'colorama==0.4.6 ; sys_platform == "win32" \\\n    --hash=sha256:' + "c" * 64 + "\n"
    assert read_exporter_lock("# a comment\n" + good + marked) == [
        {"name": "tokenizers", "version": "0.22.2", "marker": None, "hashes": ["a" * 64, "b" * 64]},
        {"name": "colorama", "version": "0.4.6", "marker": 'sys_platform == "win32"', "hashes": ["c" * 64]}]
    for bad in ("tokenizers>=0.22 --hash=sha256:" + "a" * 64, "tokenizers==0.22.2", "tokenizers==0.22.2 --hash=sha256:abc"):
        with pytest.raises(ValueError, match="not a pinned requirement"):
            read_exporter_lock(bad)


def fake_build(monkeypatch, tmp_path) -> list[list[str]]:
    """exporter_python with venv creation and pip recorded instead of run."""
    commands = []

    def run(command, check=False, capture_output=False, text=False):
        commands.append(command)
        if command[1:3] == ["-m", "venv"]:
            (Path(command[3]) / "site").mkdir(parents=True)
        return subprocess.CompletedProcess(command, 0, stdout=str(tmp_path / "cache" / "venv-site") + "\n", stderr="")

    (tmp_path / "cache" / "venv-site").mkdir(parents=True)
    monkeypatch.delenv("SSB_OPENVINO_EXPORTER", raising=False)
    monkeypatch.setattr(openvino_export.subprocess, "run", run)
    monkeypatch.setattr(openvino_export, "_run", lambda command, what, log=None: commands.append(command))
    return commands


def test_the_environment_installs_exactly_the_lock_and_is_keyed_by_it(tmp_path, monkeypatch):
    commands = fake_build(monkeypatch, tmp_path)
    python = exporter_python(tmp_path / "cache")
    installs = [c for c in commands if "install" in c]
    assert installs == [[str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--require-hashes",
                         "--only-binary=:all:", "-r", str(EXPORTER_LOCK)]]
    assert exporter_python(tmp_path / "cache") == python and len(commands) == 3  # built once: venv, site query, install

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    key = export_key(model, None, "int8")
    changed = tmp_path / "changed.lock.txt"  # the lock with one package moved on
    changed.write_text(EXPORTER_LOCK.read_text(encoding="utf-8").replace("nncf==", "nncf==9", 1), encoding="utf-8")
    monkeypatch.setattr(openvino_export, "EXPORTER_LOCK", changed)
    assert exporter_python(tmp_path / "cache") != python  # a new environment
    assert export_key(model, None, "int8") != key  # and new exports
    assert [c for c in commands if "install" in c][-1][-1] == str(changed)


def test_another_python_installs_the_locked_versions_without_the_hashes_of_3_11_wheels(tmp_path, monkeypatch):
    commands = fake_build(monkeypatch, tmp_path)
    monkeypatch.setattr(openvino_export, "EXPORTER_LOCK_PYTHON", (3, 99))
    python = exporter_python(tmp_path / "cache")
    [install] = [c for c in commands if "install" in c]
    assert "--require-hashes" not in install and install[-2:] == ["-r", str(python.parents[1] / "exporter-versions.txt")]
    lines = Path(install[-1]).read_text().splitlines()
    entries = read_exporter_lock(EXPORTER_LOCK.read_text(encoding="utf-8"))
    assert [line.split(" ;")[0] for line in lines] == [f"{e['name']}=={e['version']}" for e in entries]
    assert 'colorama==0.4.6 ; (sys_platform == "win32" and platform_machine == "AMD64")' in lines
