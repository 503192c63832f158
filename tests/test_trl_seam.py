"""The one seam to TRL's internals (ssb.arms.trl): the version it was tested with, and the warning under another."""

import re
from pathlib import Path

import pytest

trl = pytest.importorskip("trl")

from ssb.arms import trl as seam  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_check():
    """The check warns once per process: forget that it ran, before and after the test."""
    seam.check_trl_version.cache_clear()
    yield seam.check_trl_version
    seam.check_trl_version.cache_clear()


def test_the_tested_version_is_the_pinned_one():
    pins = re.findall(r"^trl==(\S+)$", (ROOT / "constraints-cpu.txt").read_text(), flags=re.MULTILINE)
    assert pins == [seam.TESTED_TRL]
    assert f'"trl=={seam.TESTED_TRL}"' in (ROOT / "pyproject.toml").read_text()  # the test extra installs the same


def test_another_trl_is_named_beside_the_tested_one_once(fresh_check, monkeypatch, caplog):
    monkeypatch.setattr(trl, "__version__", "99.1.0")
    with caplog.at_level("WARNING", logger="ssb.arms.trl"):
        fresh_check()
        seam.use_experimental_api()  # a later use of the seam says nothing more
    warnings = [r.getMessage() for r in caplog.records if r.name == "ssb.arms.trl"]
    assert len(warnings) == 1 and "TRL 99.1.0 is installed" in warnings[0] and f"tested with TRL {seam.TESTED_TRL}" in warnings[0]


def test_the_tested_trl_passes_in_silence(fresh_check, monkeypatch, caplog):
    monkeypatch.setattr(trl, "__version__", seam.TESTED_TRL)
    with caplog.at_level("WARNING", logger="ssb.arms.trl"):
        fresh_check()
    assert [r for r in caplog.records if r.name == "ssb.arms.trl"] == []


def test_each_arm_builds_its_trainer_arguments_through_the_checked_seam(fresh_check, monkeypatch, caplog, tmp_path):
    """The first use of the seam, building an arm's trainer arguments, is where another TRL is named."""
    from trl import GRPOConfig

    from ssb.config import load_config

    monkeypatch.setattr(trl, "__version__", "0.1.0")
    config = load_config(None, {"run_dir": str(tmp_path), "model.device": "cpu", "grpo.lr": 3e-5, "grpo.max_steps": 2})
    with caplog.at_level("WARNING", logger="ssb.arms.trl"):
        args = seam.trainer_args(GRPOConfig, config, config.grpo, str(tmp_path / "checkpoints"), 7, beta=0.0)
    assert any("TRL 0.1.0 is installed" in r.getMessage() for r in caplog.records)
    assert (args.learning_rate, args.max_steps, args.seed, args.use_cpu, args.bf16, args.beta) == (3e-5, 2, 7, True, False, 0.0)
