"""Damaged files and a full disk end a command with one line naming the file and what to do, not a library traceback."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from helpers import DISTILL, phase1_folder, write_benchmark
from ssb.cli import main
from ssb.runfolder.artifacts import RunFolderError, write_json_atomic
from ssb.teacher_targets import run_teacher


def cli_args(config) -> list[str]:
    """The flags that give the CLI the config of ``phase1_folder``."""
    flags = {"run_dir": config.run_dir, "data.source": "jsonl", "data.path": config.data.path, "model.name_or_path": config.model.name_or_path,
             "rollouts.chunk_questions": 8, "progress": "false", "backend.name": "hf", "teacher.batch_size": 3, **DISTILL}
    return [f"--{name}={value}" for name, value in flags.items()]


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith(f"ssb {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in "\n".join(err), err
    return lines[0]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_teacher_shard_stops_distill_naming_it(tmp_path, tiny_model_dir, capsys):
    config = phase1_folder(tmp_path, tiny_model_dir)
    run_teacher(config)
    shard = Path(config.run_dir) / "teacher" / "targets-00000.safetensors"
    truncate(shard)
    assert main(["distill", *cli_args(config)]) == 2
    line = one_error_line(capsys, "distill")
    assert str(shard) in line


def test_a_truncated_shard_is_read_as_a_message_saying_how_to_redo_it(tmp_path):
    from ssb.teacher_targets import TeacherTargets

    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "targets-00000.safetensors").write_bytes(b"\x10\x00\x00")
    write_json_atomic(folder / "manifest.json", {"examples": [{"id": "a", "shard": "targets-00000.safetensors", "start": 0, "length": 1}]})
    example = type("Example", (), {"id": "a", "solution_ids": [1]})()
    with pytest.raises(RunFolderError, match=r"targets-00000\.safetensors: teacher targets cannot be read .*ssb teacher --force"):
        TeacherTargets(folder, {}).get(example)


def planted_checkpoint(config, step: int = 1) -> Path:
    """A complete checkpoint of ``step`` in the distill folder, as an interrupted run leaves one."""
    from ssb.lora import build_peft_model
    from ssb.models import load_model
    from ssb.training_loop import save_checkpoint

    peft_model = build_peft_model(load_model(config.model), config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return save_checkpoint(Path(config.run_dir) / "distill" / "checkpoints", step, peft_model, optimizer, scheduler)


@pytest.mark.parametrize("damaged", ["adapter.safetensors", "trainer_state.pt"])
def test_a_truncated_checkpoint_gives_way_to_the_one_before_naming_it(tmp_path, tiny_model_dir, caplog, damaged):
    """A torn file in the newest checkpoint: distill resumes from the one before, and says which file it skipped."""
    config = phase1_folder(tmp_path, tiny_model_dir)
    run_teacher(config)
    planted_checkpoint(config, 1)
    newest = planted_checkpoint(config, 2)
    truncate(newest / damaged)
    with caplog.at_level("INFO", logger="ssb"):
        assert main(["distill", *cli_args(config)]) == 0
    assert f"skipping {newest}: incomplete ({newest / damaged} does not load (" in caplog.text
    assert "resuming distillation after step 1" in caplog.text


def test_with_no_intact_checkpoint_distill_starts_over_and_says_so(tmp_path, tiny_model_dir, caplog):
    config = phase1_folder(tmp_path, tiny_model_dir)
    run_teacher(config)
    truncate(planted_checkpoint(config) / "trainer_state.pt")
    with caplog.at_level("INFO", logger="ssb"):
        assert main(["distill", *cli_args(config)]) == 0
    assert "is intact: training starts over from step 0" in caplog.text and "resuming distillation" not in caplog.text
    assert json.loads((Path(config.run_dir) / "distill" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1


def test_a_full_disk_while_writing_a_teacher_shard_names_the_shard(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import ssb.teacher_targets

    config = phase1_folder(tmp_path, tiny_model_dir)

    def full_disk(tensors, path):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")  # what safetensors raises

    monkeypatch.setattr(ssb.teacher_targets, "save_file", full_disk)
    assert main(["teacher", *cli_args(config)]) == 2
    line = one_error_line(capsys, "teacher")
    shard = Path(config.run_dir) / "teacher" / "targets-00000.safetensors"
    assert f"[Errno 28] No space left on device: '{shard}': the disk is full" in line


def test_a_full_disk_while_writing_a_checkpoint_names_the_file(tmp_path, tiny_model_dir, capsys, monkeypatch):
    config = phase1_folder(tmp_path, tiny_model_dir)
    run_teacher(config)

    def full_disk(obj, f, *args, **kwargs):
        try:  # torch.save into a Python file: the file's OSError, under torch's own RuntimeError
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(["distill", *cli_args(config)]) == 2
    line = one_error_line(capsys, "distill")
    assert "[Errno 28] No space left on device: '" in line and "step-000002.tmp/trainer_state.pt': the disk is full" in line


def test_writing_names_the_file_of_an_os_error_and_passes_other_errors_on(tmp_path):
    from ssb.runfolder.artifacts import writing

    with pytest.raises(OSError, match=r"\[Errno 28\] No space left on device: '.*x\.json'"), writing(tmp_path / "x.json"):
        raise OSError(28, "No space left on device")
    with pytest.raises(KeyError), writing(tmp_path / "x.json"):
        raise KeyError("not about the file")
    with pytest.raises(RuntimeError, match="size mismatch"), writing(tmp_path / "x.json"):
        raise RuntimeError("size mismatch")


def test_an_adapter_whose_weights_do_not_match_its_config_stops_eval_naming_it(tmp_path, tiny_model_dir, capsys):
    from peft import LoraConfig, get_peft_model

    from ssb.config import ModelConfig
    from ssb.models import load_model

    for name, rank in (("adapter", 2), ("rank-4", 4)):
        model = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
        get_peft_model(model, LoraConfig(r=rank, target_modules=["q_proj"])).save_pretrained(tmp_path / name)
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes((tmp_path / "rank-4" / "adapter_model.safetensors").read_bytes())
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 2
    write_benchmark(tmp_path / "data", "gsm8k", 2)
    code = main(["eval", "--model", str(tiny_model_dir), "--adapter", f"x={tmp_path / 'adapter'}", "--benchmarks", "gsm8k",
                 "--max-new-tokens", "2", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
                 "--progress=false", "--backend.name=hf"])
    assert code == 2
    line = one_error_line(capsys, "eval")
    assert f"{tmp_path / 'adapter'}: the adapter does not load (size mismatch for " in line


def test_a_checkpoint_of_another_shape_stops_distill_naming_it(tmp_path, tiny_model_dir, capsys):
    """Files that load but were saved by another training (LoRA rank 8, not the config's 4): one line, not torch's."""
    import dataclasses

    from ssb.lora import build_peft_model
    from ssb.models import load_model
    from ssb.training_loop import save_checkpoint

    config = phase1_folder(tmp_path, tiny_model_dir)
    run_teacher(config)
    other = dataclasses.replace(config, distill=dataclasses.replace(config.distill, lora=dataclasses.replace(config.distill.lora, r=8)))
    peft_model = build_peft_model(load_model(other.model), other)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad])
    sum(p.sum() for p in peft_model.parameters() if p.requires_grad).backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint = save_checkpoint(Path(config.run_dir) / "distill" / "checkpoints", 1, peft_model, optimizer, scheduler)
    assert main(["distill", *cli_args(config)]) == 2
    line = one_error_line(capsys, "distill")
    assert line.startswith(f"ssb distill: error: {checkpoint}: the checkpoint does not fit this training (") and line.endswith(
        f"remove {checkpoint} to resume from an earlier checkpoint or from the start"), line
