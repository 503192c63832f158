"""The tests' own caches (tests/conftest.py): a fresh ssb cache per run, inherited by subprocesses, and the OpenVINO
exporter the user gave or the tests' own; never the user's ssb cache."""

import os
import subprocess
import sys
from pathlib import Path

from ssb.generation.openvino_export import exporter_venv
from ssb.packaged_models import default_cache_dir


def test_the_ssb_cache_is_the_runs_own(ssb_cache, user_ssb_cache, tmp_path_factory):
    assert default_cache_dir() == ssb_cache
    assert ssb_cache.is_relative_to(tmp_path_factory.getbasetemp())  # fresh for each run
    assert not ssb_cache.resolve().is_relative_to(user_ssb_cache.resolve())
    assert Path(os.environ["MPLCONFIGDIR"]).is_relative_to(ssb_cache)


def test_the_exporter_is_the_users_or_the_tests_own(user_openvino_exporter, user_ssb_cache, pytestconfig):
    if user_openvino_exporter is None and not pytestconfig.pluginmanager.hasplugin("cacheprovider"):
        assert "SSB_OPENVINO_EXPORTER" not in os.environ  # built in the run's own cache, like everything else
        return
    exporter = Path(os.environ["SSB_OPENVINO_EXPORTER"])
    if user_openvino_exporter is not None:
        assert exporter == Path(user_openvino_exporter)
    else:
        assert exporter.is_relative_to(pytestconfig.cache.mkdir("ssb-openvino-exporter"))
        assert not exporter.resolve().is_relative_to(user_ssb_cache.resolve())


def test_a_subprocess_with_another_home_uses_the_runs_caches_and_writes_nothing_in_that_home(ssb_cache, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    script = ("import matplotlib\nfrom ssb.packaged_models import default_cache_dir\n"
              "print(default_cache_dir()); print(matplotlib.get_configdir()); print(matplotlib.get_cachedir())")
    shown = subprocess.run([sys.executable, "-c", script], env={**os.environ, "HOME": str(home)},
                           check=True, capture_output=True, text=True).stdout.split()
    assert shown == [str(ssb_cache)] + [os.environ["MPLCONFIGDIR"]] * 2
    assert list(home.iterdir()) == []


def test_the_exporter_launcher_runs_the_environment_built_beside_it(exporter_launcher, tmp_path):
    """The launcher hands its arguments to the exporter environment in its folder (here a stand-in, already built), and
    does not answer with itself although SSB_OPENVINO_EXPORTER names it."""
    venv = exporter_venv(tmp_path)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text('#!/bin/sh\necho "exporter $*"\n')
    (venv / "bin" / "python").chmod(0o755)
    (venv / "ready").write_text("")
    launcher = exporter_launcher(tmp_path)
    assert exporter_launcher(tmp_path) == launcher  # written once, then found
    done = subprocess.run([str(launcher), "-m", "optimum.commands.optimum_cli", "export"], env={**os.environ, "SSB_OPENVINO_EXPORTER": str(launcher)},
                          check=True, capture_output=True, text=True)
    assert done.stdout == "exporter -m optimum.commands.optimum_cli export\n"
