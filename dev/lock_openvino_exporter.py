"""Write ``src/ssb/generation/openvino_exporter.lock.txt``: every package the OpenVINO exporter environment installs.

Run with PyPI reachable: ``PYTHONPATH=src python dev/lock_openvino_exporter.py`` (minutes: pip downloads
wheels to read their metadata). For each CPython version and platform below pip resolves
``EXPORTER_DEPENDENCIES`` (``pip install --dry-run --report``; the first platform decides the versions
of each Python, the others are held to them), and the lock keeps what they need apart from torch and
openvino, which the environment takes from ssb's own (``ssb.generation.openvino_export``): each package
at its version, the sha256 of every wheel chosen for it, and a marker where only some targets need it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ssb.generation.openvino_export import EXPORTER_DEPENDENCIES, EXPORTER_LOCK, EXPORTER_PACKAGES, SHARED_PACKAGES

# Each platform the lock covers: its marker environment and the wheel tags pip may take for it (pip does not
# widen a manylinux_2_x tag to the older ones itself).
LINUX_TAGS = ["manylinux_2_28_{arch}", "manylinux_2_27_{arch}", "manylinux_2_24_{arch}", "manylinux_2_17_{arch}", "manylinux2014_{arch}",
              "manylinux_2_12_{arch}", "manylinux2010_{arch}", "manylinux_2_5_{arch}", "manylinux1_{arch}", "linux_{arch}"]
PLATFORMS = {
    "linux-x86_64": ({"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
                     [tag.format(arch="x86_64") for tag in LINUX_TAGS]),
    "linux-aarch64": ({"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
                      [tag.format(arch="aarch64") for tag in LINUX_TAGS]),
    "macos-arm64": ({"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"}, ["macosx_14_0_arm64"]),
    "windows-amd64": ({"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"}, ["win_amd64"]),
}


PYTHONS = ["3.11"]


def resolve(requirements: list[str], python: str, platform: str, constraints: Path | None, no_deps: bool = False) -> dict[str, dict]:
    """pip's choice for ``requirements`` on CPython ``python`` and ``platform``: name -> its report entry."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--dry-run", "--ignore-installed",
                   "--report", str(report), "--target", str(Path(scratch) / "target"), *[f"--platform={tag}" for tag in PLATFORMS[platform][1]],
                   "--python-version", python, "--implementation", "cp", "--only-binary=:all:", *requirements]
        if constraints is not None:
            command += ["--constraint", str(constraints)]
        if no_deps:
            command.append("--no-deps")
        subprocess.run(command, check=True)
        return {canonicalize_name(item["metadata"]["name"]): item for item in json.loads(report.read_text())["install"]}


def needed(roots: list[str], chosen: dict[str, dict], environment: dict) -> tuple[set[str], list[str]]:
    """The packages ``roots`` need on one target, not following the shared ones (torch, openvino), and the
    requirements among them that ``chosen`` lacks (pip evaluates markers for the running platform, not the target)."""
    seen, todo, missing = set(), [(Requirement(r), ()) for r in roots], []
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in SHARED_PACKAGES:
            continue
        if requirement.marker is not None and not any(requirement.marker.evaluate({**environment, "extra": e}) for e in extras or ("",)):
            continue
        key = (name, tuple(sorted(requirement.extras)))
        if key in seen:
            continue
        seen.add(key)
        if name not in chosen:
            missing.append(f"{requirement.name}{requirement.specifier}")
            continue
        for dependency in chosen[name]["metadata"].get("requires_dist") or []:
            todo.append((Requirement(dependency), tuple(sorted(requirement.extras))))
    return {name for name, _ in seen}, missing


def lock_one_python(python: str) -> dict[tuple[str, str], dict[str, dict]]:
    """(python, platform) -> the packages that target installs (name -> pip's report entry)."""
    platforms = list(PLATFORMS)
    first = resolve(EXPORTER_DEPENDENCIES, python, platforms[0], None)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write("".join(f"{name}=={item['metadata']['version']}\n" for name, item in first.items() if name not in SHARED_PACKAGES))
    targets = {}
    for platform in platforms:
        chosen = first if platform == platforms[0] else resolve(EXPORTER_DEPENDENCIES, python, platform, Path(pins.name))
        chosen.update(resolve(EXPORTER_PACKAGES, python, platform, None, no_deps=True))
        environment = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0",
                       "implementation_name": "cpython", "platform_python_implementation": "CPython",
                       "os_name": "nt" if platform.startswith("windows") else "posix", **PLATFORMS[platform][0]}
        names, missing = needed(EXPORTER_DEPENDENCIES, chosen, environment)
        while missing:
            chosen.update(resolve(missing, python, platform, Path(pins.name)))
            names, missing = needed(EXPORTER_DEPENDENCIES, chosen, environment)
        # The exporter packages are installed without their declared dependencies, so only their own wheel counts.
        names |= {canonicalize_name(Requirement(r).name) for r in EXPORTER_PACKAGES}
        targets[(python, platform)] = {name: chosen[name] for name in names}
    return targets


def marker(on: set[tuple[str, str]]) -> str:
    """The environment marker of the targets ``on`` (empty for all of them)."""
    everywhere = {(p, q) for p in PYTHONS for q in PLATFORMS}
    if on == everywhere:
        return ""
    pythons, platforms = {p for p, _ in on}, {q for _, q in on}

    def platform_is(q: str) -> str:
        return f'sys_platform == "{PLATFORMS[q][0]["sys_platform"]}" and platform_machine == "{PLATFORMS[q][0]["platform_machine"]}"'

    if on == {(p, q) for p in pythons for q in PLATFORMS}:
        return " ; " + " or ".join(f'python_version == "{p}"' for p in sorted(pythons))
    if on == {(p, q) for p in PYTHONS for q in platforms}:
        return " ; " + " or ".join(f"({platform_is(q)})" for q in sorted(platforms))
    return " ; " + " or ".join(f'(python_version == "{p}" and {platform_is(q)})' for p, q in sorted(on))


def main() -> None:
    targets = {}
    with ThreadPoolExecutor(len(PYTHONS)) as pool:
        for found in pool.map(lock_one_python, PYTHONS):
            targets.update(found)
    releases: dict[tuple[str, str], set] = {}  # (name, version) -> the targets that install it
    for target, entries in targets.items():
        for name, item in entries.items():
            releases.setdefault((name, item["metadata"]["version"]), set()).add(target)
    lines = []
    for (name, version), on in sorted(releases.items()):
        hashes = sorted({targets[t][name]["download_info"]["archive_info"]["hashes"]["sha256"] for t in on})
        lines.append(f"{name}=={version}{marker(on)} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in hashes))
    header = ("# The OpenVINO exporter environment: every package it installs (pip install --no-deps --require-hashes -r),\n"
              f"# for CPython {', '.join(PYTHONS)} on {', '.join(PLATFORMS)}.\n"
              "# torch and openvino are not here: the environment uses ssb's own. Written by dev/lock_openvino_exporter.py.\n")
    EXPORTER_LOCK.write_text(header + "\n".join(lines) + "\n")
    print(f"{EXPORTER_LOCK}: {len(lines)} lines")


if __name__ == "__main__":
    main()
