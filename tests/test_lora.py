"""Saved adapters: the same adapter_config.json bytes under any hash seed, and an adapter loads only when its weights
file holds exactly the tensors of the modules its config targets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import write_benchmark
from ssb.cli import main
from ssb.config import ModelConfig
from ssb.lora import load_adapter, save_adapter
from ssb.models import load_model
from ssb.runfolder.artifacts import RunFolderError

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Saves an adapter of the tiny model in a process of its own, so that each save gets its own hash seed.
SAVE_IN_A_PROCESS = """
import sys
from pathlib import Path
from peft import LoraConfig, get_peft_model
from ssb.config import ModelConfig
from ssb.lora import save_adapter
from ssb.models import load_model

model = load_model(ModelConfig(name_or_path=sys.argv[1], dtype="float32"))
save_adapter(get_peft_model(model, LoraConfig(r=2, target_modules=sys.argv[3].split(","))), Path(sys.argv[2]))
"""


def test_an_adapter_saved_under_another_hash_seed_has_the_same_config_bytes(tmp_path, tiny_model_dir):
    """PEFT writes target_modules in the order of a Python set; a stage that recorded the config's digest (eval) must see
    a retrained adapter, or a restored run trained again, as the same."""
    configs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"seed-{seed}"
        subprocess.run([sys.executable, "-c", SAVE_IN_A_PROCESS, str(tiny_model_dir), str(out), ",".join(ALL_LINEAR)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        configs.append((out / "adapter_config.json").read_bytes())
    assert configs[0] == configs[1] == configs[2]
    assert json.loads(configs[0])["target_modules"] == sorted(ALL_LINEAR)


def test_a_trainers_saved_adapter_gets_the_canonical_config(tmp_path):
    """TRL's arms save through the trainer (which gathers a sharded model first); the config is made canonical after."""
    from ssb.arms.trl import train_and_save

    class Trainer:
        args = type("Args", (), {"should_save": True})()
        state = type("State", (), {"log_history": [{"step": 1, "loss": 0.5}]})()

        def train(self, resume_from_checkpoint):
            pass

        def save_model(self, folder):  # as PEFT writes it: keys sorted, target_modules in set order
            Path(folder).mkdir(parents=True)
            config = {"r": 2, "target_modules": ["v_proj", "q_proj", "k_proj"], "alpha_pattern": {"b": 1, "a": 2}}
            (Path(folder) / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))

    train_and_save(Trainer(), None, None, tmp_path)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["k_proj", "q_proj", "v_proj"] and list(config["alpha_pattern"]) == ["a", "b"]


def saved_adapter(folder: Path, tiny_model_dir, targets: list[str]) -> Path:
    from peft import LoraConfig, get_peft_model

    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"))
    save_adapter(get_peft_model(model, LoraConfig(r=2, target_modules=targets, init_lora_weights=False)), folder)
    return folder / "adapter_model.safetensors"


def without(weights: Path, part: str) -> None:
    """Rewrite an adapter's weights file without every tensor whose name holds ``part``."""
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if part not in k}, weights)


def eval_adapter(tmp_path, tiny_model_dir, adapter: Path) -> int:
    write_benchmark(tmp_path / "data", "gsm8k", 2)
    return main(["eval", "--model", str(tiny_model_dir), "--adapter", f"x={adapter}", "--benchmarks", "gsm8k", "--max-new-tokens", "2",
                 "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"), "--progress=false", "--backend.name=hf"])


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith(f"ssb {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in "\n".join(err), err
    return lines[0]


def test_an_adapter_missing_tensors_its_config_targets_is_not_evaluated(tmp_path, tiny_model_dir, capsys):
    """PEFT would leave the missing pairs fresh (B = 0) with a warning, and the evaluation would run on half an adapter."""
    weights = saved_adapter(tmp_path / "adapter", tiny_model_dir, ["q_proj", "v_proj"])
    without(weights, "v_proj")
    assert eval_adapter(tmp_path, tiny_model_dir, tmp_path / "adapter") == 2
    line = one_error_line(capsys, "eval")
    assert f"{weights}: the adapter does not match its adapter_config.json: 4 tensor(s) of modules it targets are missing (" in line
    assert "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight" in line and "and 1 more" in line
    assert not list((tmp_path / "out" / "eval").glob("x/*"))  # the base model was evaluated, the adapter not


def test_an_adapter_with_tensors_of_modules_its_config_does_not_target_is_refused_and_the_model_left_as_it_was(tmp_path, tiny_model_dir):
    weights = saved_adapter(tmp_path / "wide", tiny_model_dir, ["q_proj", "k_proj"])
    narrow = saved_adapter(tmp_path / "narrow", tiny_model_dir, ["q_proj"])
    narrow.write_bytes(weights.read_bytes())  # k_proj's tensors beside a config that targets q_proj only
    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RunFolderError, match=r"narrow/adapter_model\.safetensors: .*: 4 tensor\(s\) match no module it targets "
                                             r"\(base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_A\.weight, "):
        load_adapter(model, tmp_path / "narrow")
    assert not any("lora" in name for name, _ in model.named_modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert load_adapter(model, tmp_path / "wide") is not None  # a whole adapter loads into the same model


def test_an_adapter_file_carrying_a_base_models_weight_is_refused_and_the_weight_left_as_it_was(tmp_path, tiny_model_dir):
    """PEFT loads with strict=False: a base weight in the adapter's file would overwrite the model's own, silently."""
    weights = saved_adapter(tmp_path / "adapter", tiny_model_dir, ["q_proj"])
    tensors = load_file(weights)
    name = "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"))
    original = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    save_file({**tensors, name: torch.full_like(original, 7.0)}, weights)
    with pytest.raises(RunFolderError, match=rf"holds 1 weight\(s\) of the base model, not of a LoRA adapter \({name}\)"):
        load_adapter(model, tmp_path / "adapter")
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, original)
