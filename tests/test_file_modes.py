"""Every safetensors file ssb writes gets the mode the umask gives a new file, as every other file does, so a run folder
shared with a group can be read from another account (safetensors itself creates them 0600)."""

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import phase1_folder
from ssb.distillation import run_distill
from ssb.runfolder.file_modes import follow_umask, umask_mode
from ssb.teacher_targets import run_teacher


@pytest.fixture(params=[(0o022, 0o644), (0o002, 0o664)], ids=["umask-022", "umask-002"])
def expected_mode(request):
    umask, mode = request.param
    previous = os.umask(umask)
    yield mode
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_umask_mode_is_what_open_gives_a_new_file(tmp_path, expected_mode):
    (tmp_path / "plain").write_text("x")
    assert umask_mode() == mode(tmp_path / "plain") == expected_mode


def test_teacher_targets_checkpoints_adapter_and_merged_model_follow_the_umask(tmp_path, tiny_model_dir, expected_mode):
    from ssb.rounds import _save_merged

    config = phase1_folder(tmp_path, tiny_model_dir, **{"distill.merge": True})
    run_teacher(config)
    run_distill(config)
    run = Path(config.run_dir)
    _save_merged(config, run / "distill" / "adapter", tmp_path / "round-2-model")
    modes = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in tmp_path.rglob("*.safetensors")}
    assert {"run/teacher/targets-00000.safetensors", "run/distill/adapter/adapter_model.safetensors", "run/distill/merged/model.safetensors",
            "round-2-model/model.safetensors"} <= set(modes)
    assert any(name.startswith("run/distill/checkpoints/") for name in modes)
    assert modes == dict.fromkeys(modes, oct(expected_mode))


def test_grpo_lagged_sampler_weights_follow_the_umask(tmp_path, expected_mode):
    from ssb.arms.engine_rollouts import SAMPLER_FOLDER, LaggedWeights

    (tmp_path / "checkpoint-2").mkdir()
    sampler = SimpleNamespace(lag=1, states={1: {"a": torch.zeros(2)}, 2: {"a": torch.ones(2)}})
    LaggedWeights(sampler).on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=2), None)
    saved = sorted((tmp_path / "checkpoint-2" / SAMPLER_FOLDER).iterdir())
    assert [p.name for p in saved] == ["step-1.safetensors", "step-2.safetensors"]
    assert [mode(p) for p in saved] == [expected_mode] * 2


def test_follow_umask_never_changes_a_file_through_a_link(tmp_path, expected_mode):
    outside = tmp_path / "outside"
    outside.write_text("x")
    outside.chmod(0o600)
    (tmp_path / "link.safetensors").symlink_to(outside)
    with pytest.raises(OSError, match="link.safetensors"):
        follow_umask(tmp_path / "link.safetensors")
    assert mode(outside) == 0o600
