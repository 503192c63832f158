"""Fixtures shared by the tests, and the test session's own caches.

Every test run gets a fresh ssb cache (``SSB_CACHE``) and matplotlib folder (``MPLCONFIGDIR``) under pytest's base
temporary folder, set in ``os.environ`` so that the ssb commands tests run as subprocesses inherit them. The user's
cache (their ``SSB_CACHE``, else ``~/.cache/ssb``) is never written: the session ends in an error naming what changed
there if anything did.

One thing outlives a run: the OpenVINO exporter's environment, a venv of about 0.5 GB that pip builds from
``openvino_exporter.lock.txt`` (half a minute from a local wheel folder, longer when it downloads), which a fresh cache
would rebuild on every run. Unless the user gives one in ``SSB_OPENVINO_EXPORTER``, the tests' is built by ssb on first
use in pytest's own cache folder (``.pytest_cache/d/ssb-openvino-exporter``, removed by ``--cache-clear``) and reused by
later runs. The exports themselves are made afresh each run (about 15 s each for the tests' tiny models on 2 cores): an
export's key does not cover the torch and OpenVINO the exporter takes from this environment, so a kept export could
hide an exporter that no longer works.
"""

import os
import shlex
import sys
import warnings
from pathlib import Path

import pytest

from ssb.packaged_models import default_cache_dir

sys.path.insert(0, str(Path(__file__).parent))

from tiny import SHARED_TOKENIZER, byte_tokenizer, save_tiny_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The user's settings, read before the session sets its own.
USER_CACHE = default_cache_dir()
USER_EXPORTER = os.environ.get("SSB_OPENVINO_EXPORTER") or None

# SSB_OPENVINO_EXPORTER names a Python; this one builds ssb's exporter environment beside itself on first use, so that a
# test run that never exports never builds it, and every later run finds it built.
EXPORTER_LAUNCHER = """import fcntl
import os
import sys
from pathlib import Path

from ssb.generation.openvino_export import exporter_python

os.environ.pop("SSB_OPENVINO_EXPORTER", None)  # else exporter_python would answer with this launcher
with open(Path(__file__).with_name("build.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # test runs that start together build it once
    python = str(exporter_python(Path(__file__).parent))
os.execv(python, [python, *sys.argv[1:]])
"""


def write_exporter_launcher(folder: Path) -> Path:
    """The launcher (``python``, a shell script running ``EXPORTER_LAUNCHER`` with this Python) in ``folder``, written if
    missing or out of date. A shell script, not a ``#!`` line naming this Python: such a line breaks at a space in the path."""
    files = {"launcher.py": EXPORTER_LAUNCHER,
             "python": f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(folder / "launcher.py"))} "$@"\n'}
    for name, text in files.items():
        path = folder / name
        if not path.is_file() or path.read_text() != text:
            staging = folder / f".{name}.{os.getpid()}"
            staging.write_text(text)
            staging.chmod(0o755)
            staging.replace(path)  # whole, for a run that starts meanwhile
    return folder / "python"


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime in ns, size) of ``root`` and of everything under it, by path; empty when ``root`` does not exist."""
    paths = [str(root)] + [os.path.join(parent, name) for parent, dirs, files in os.walk(root) for name in [*dirs, *files]]
    entries = {}
    for path in paths:
        try:
            stat = os.lstat(path)
        except FileNotFoundError:  # absent, or removed while walking
            continue
        entries[path] = (stat.st_mtime_ns, stat.st_size)
    return entries


@pytest.fixture(scope="session", autouse=True)
def ssb_cache(tmp_path_factory, pytestconfig) -> Path:
    """The session's ssb cache: fresh for each run, and the only one the tests use."""
    cache = tmp_path_factory.mktemp("ssb-cache", numbered=False)
    before = listing(USER_CACHE)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSB_CACHE", str(cache))
        env.setenv("MPLCONFIGDIR", str(cache / "matplotlib"))
        # Without pytest's cache (-p no:cacheprovider), each run builds its own.
        if USER_EXPORTER is None and pytestconfig.pluginmanager.hasplugin("cacheprovider"):
            env.setenv("SSB_OPENVINO_EXPORTER", str(write_exporter_launcher(pytestconfig.cache.mkdir("ssb-openvino-exporter"))))
        yield cache
    after = listing(USER_CACHE)
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    if changed:
        # A warning, not a failure: an ssb command in another shell (a study running for hours) changes that cache too.
        # What the tests themselves use is asserted in test_own_cache.py.
        warnings.warn(f"the user's ssb cache {USER_CACHE} changed during the tests: {len(changed)} entries, such as "
                      f"{', '.join(changed[:5])}; the tests use {cache} (by another process?)", stacklevel=1)


@pytest.fixture(scope="session")
def user_ssb_cache() -> Path:
    """The user's ssb cache, which no test may write."""
    return USER_CACHE


@pytest.fixture(scope="session")
def user_openvino_exporter() -> str | None:
    """The exporter the user gave in ``SSB_OPENVINO_EXPORTER``, which the tests use too; None if none."""
    return USER_EXPORTER


@pytest.fixture(scope="session")
def exporter_launcher():
    """``write_exporter_launcher``, for the test of the launcher itself."""
    return write_exporter_launcher


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def qwen_tokenizer():
    if not SHARED_TOKENIZER.exists():
        pytest.skip("../shared/models/qwen2.5-tokenizer is not present")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SHARED_TOKENIZER)
