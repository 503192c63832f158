"""The GRPO control through TRL on a tiny random model, on CPU."""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytest.importorskip("trl")

from helpers import write_benchmark, write_questions  # noqa: E402
from ssb.arms.grpo import format_reward, run_grpo  # noqa: E402
from ssb.config import load_config  # noqa: E402
from ssb.evaluation import run_eval  # noqa: E402
from ssb.grading import correctness_reward  # noqa: E402
from ssb.runfolder.artifacts import read_jsonl  # noqa: E402


def test_reward_functions_are_thin_adapters_over_the_grader():
    completions = [[{"role": "assistant", "content": "so \\boxed{18.00}"}], [{"role": "assistant", "content": "\\boxed{17}"}], "no box"]
    assert correctness_reward(completions, gold=["18", "18", "18"]) == [1.0, 0.0, 0.0]
    assert format_reward(completions) == [1.0, 1.0, 0.0]


def test_grpo_steps_change_lora_only_and_the_adapter_is_evaluable(tmp_path, tiny_model_dir, monkeypatch):
    import torch
    import trl
    from peft import PeftModel, get_peft_model_state_dict

    from ssb.models import load_model, load_tokenizer
    from ssb.prompts import load_prompts
    from tiny import greedy_reference, recorded

    data = write_questions(tmp_path / "q.jsonl", 4)
    config = load_config(None, {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "jsonl",
                                "data.path": str(data), "grpo.num_generations": 2, "grpo.batch_size": 4, "grpo.max_steps": 2,
                                "grpo.max_completion_length": 6, "grpo.lr": 1e-2, "distill.lora.r": 4, "progress": False, "backend.name": "hf"})
    calls = []

    def reward(completions, gold, **kwargs):
        """TRL's signature; the random model never boxes an answer, so the grade is mixed with a term
        that differs between the two completions of every group (TRL puts a prompt's group side by
        side), so that every step has non-zero advantages and so a gradient."""
        calls.append((list(completions), list(gold), sorted(kwargs), [len(ids) for ids in kwargs["completion_ids"]]))
        return [g + i % 2 for i, g in enumerate(correctness_reward(completions, gold))]

    trainers, initial = [], {}

    class RecordingTrainer(trl.GRPOTrainer):
        """TRL's trainer, remembering every parameter as it was before the first step."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)
            initial.update({name: p.detach().clone() for name, p in self.model.named_parameters()})

    monkeypatch.setattr(trl, "GRPOTrainer", RecordingTrainer)
    weights_file = Path(tiny_model_dir) / "model.safetensors"
    base_before = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    stats = run_grpo(config, reward_funcs=[reward])
    assert stats["steps"] == 2
    assert stats["generated_tokens"] == sum(sum(lengths) for *_, lengths in calls)  # the report's compute column
    completions, gold, kwargs, _ = calls[0]
    assert len(completions) == len(gold) == 4 and completions[0][-1]["role"] == "assistant"
    assert set(gold) <= {"0", "1", "2", "3"} and {"prompts", "completion_ids", "id"} <= set(kwargs)

    # Every LoRA matrix moved (B from zero, A from its random init); no base parameter did.
    trained = dict(trainers[0].model.named_parameters())
    lora = [name for name in initial if "lora_" in name]
    assert len(lora) == 2 * 7 * 2  # A and B of the 7 projections in both layers
    assert [name for name in lora if torch.equal(trained[name].detach(), initial[name])] == []
    assert [name for name in initial if "lora_" not in name and not torch.equal(trained[name].detach(), initial[name])] == []
    assert all(not trained[name].requires_grad for name in initial if "lora_" not in name)
    # What was saved is what was trained, and only the adapter.
    adapter = load_file(tmp_path / "run" / "grpo" / "adapter" / "adapter_model.safetensors")
    in_memory = get_peft_model_state_dict(trainers[0].model)
    assert set(adapter) == set(in_memory) and all(torch.equal(adapter[k], in_memory[k].to(adapter[k].dtype)) for k in adapter)
    assert not any("lm_head" in k or "embed" in k for k in adapter)
    assert (tmp_path / "run" / "grpo" / "metrics.jsonl").read_text().strip()
    assert hashlib.sha256(weights_file.read_bytes()).hexdigest() == base_before  # base weights on disk untouched

    write_benchmark(tmp_path / "bench", "gsm8k", 2)
    eval_config = load_config(None, {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "model.dtype": "float32",
                                     "data.data_dir": str(tmp_path / "bench"), "eval.benchmarks": ["gsm8k"],
                                     "eval.adapters": [f"grpo={tmp_path / 'run' / 'grpo' / 'adapter'}"],
                                     "eval.sampling.max_new_tokens": 6, "progress": False, "backend.name": "hf"})
    assert run_eval(eval_config) == {"base": {"gsm8k": 0.0}, "grpo": {"gsm8k": 0.0}}
    assert json.loads((tmp_path / "run/eval/grpo/gsm8k.summary.json").read_text())["n_questions"] == 2
    # The evaluated completions are the trained adapter's (a greedy loop over base + adapter), not the base's.
    tokenizer = load_tokenizer(eval_config.model)
    references = {"base": load_model(eval_config.model).eval(),
                  "grpo": PeftModel.from_pretrained(load_model(eval_config.model), tmp_path / "run" / "grpo" / "adapter").eval()}
    texts = {}
    for name, model in references.items():
        samples = read_jsonl(tmp_path / f"run/eval/{name}/gsm8k.samples.jsonl")
        for i, record in enumerate(samples):
            conversation = [{"role": "system", "content": load_prompts().system}, {"role": "user", "content": f"Q{i}: what is {i}?"}]
            assert record["prompt"] == conversation
            got, want = record["completions"][0], greedy_reference(model, tokenizer, conversation, 6)
            assert recorded(got) == recorded(want)
        texts[name] = [r["completions"][0]["text"] for r in samples]
    assert texts["grpo"] != texts["base"]


def test_a_wall_clock_budget_stops_training_and_counts_across_resumes(tmp_path, tiny_model_dir):
    data = write_questions(tmp_path / "q.jsonl", 4)
    settings = {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "jsonl", "data.path": str(data),
                "grpo.num_generations": 2, "grpo.batch_size": 4, "grpo.max_steps": 4, "grpo.max_completion_length": 4,
                "distill.lora.r": 4, "progress": False, "grpo.max_wall_s": 1e-3}
    stats = run_grpo(load_config(None, settings), reward_funcs=[lambda completions, **kw: [float(i % 2) for i in range(len(completions))]])
    assert stats["steps"] == 1 and stats["stopped_by_wall_clock_budget"] is True  # the budget is checked after each step
    ledger = json.loads((tmp_path / "run" / "grpo" / "wall_s.json").read_text())
    assert ledger["step"] == 1 and ledger["wall_s"] >= 1e-3


def test_a_generation_budget_stops_at_the_first_step_that_reaches_it(tmp_path, tiny_model_dir):
    data = write_questions(tmp_path / "q.jsonl", 8)
    settings = {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "jsonl", "data.path": str(data),
                "grpo.num_generations": 2, "grpo.batch_size": 4, "grpo.max_steps": 8, "grpo.max_completion_length": 4,
                "distill.lora.r": 4, "progress": False, "grpo.sampler": "trl", "grpo.max_generated_tokens": 20}
    stats = run_grpo(load_config(None, settings), reward_funcs=[lambda completions, **kw: [float(i % 2) for i in range(len(completions))]])
    per_step = [4 * m["completions/mean_length"] for m in read_jsonl(tmp_path / "run" / "grpo" / "metrics.jsonl") if "completions/mean_length" in m]
    assert len(per_step) == stats["steps"] < 8 and stats["stopped_by_generation_budget"] is True
    assert sum(per_step[:-1]) < 20 <= sum(per_step) == stats["generated_tokens"]


def test_a_resumed_budget_counts_from_the_checkpoint_it_resumes_from(tmp_path, tiny_model_dir):
    from ssb.arms.trl import WallClockBudget

    data = write_questions(tmp_path / "q.jsonl", 4)
    settings = {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "jsonl", "data.path": str(data),
                "grpo.num_generations": 2, "grpo.batch_size": 4, "grpo.max_steps": 3, "grpo.max_completion_length": 4, "grpo.save_every": 2,
                "distill.lora.r": 4, "progress": False, "grpo.max_wall_s": 1e9}
    stats = run_grpo(load_config(None, settings), reward_funcs=[lambda completions, **kw: [float(i % 2) for i in range(len(completions))]])
    assert stats["steps"] == 3 and stats["stopped_by_wall_clock_budget"] is False
    grpo = tmp_path / "run" / "grpo"
    at_two = json.loads((grpo / "checkpoints" / "checkpoint-2" / WallClockBudget.BUDGET_FILE).read_text())
    after_three = json.loads((grpo / "wall_s.json").read_text())
    assert at_two["step"] == 2 and after_three["step"] == 3 and 0 < at_two["wall_s"] < after_three["wall_s"]
    # Resuming from checkpoint 2 redoes step 3: only the time up to checkpoint 2 counts, not step 3's.
    resumed = WallClockBudget(1e9, grpo / "wall_s.json", resume_from=str(grpo / "checkpoints" / "checkpoint-2"))
    assert resumed.spent_before == at_two["wall_s"]
    assert WallClockBudget(1e9, grpo / "wall_s.json").spent_before == 0.0  # no checkpoint: nothing was kept, nothing counts


def test_a_finished_grpo_run_is_invalidated_by_a_new_system_prompt_or_grader(tmp_path, tiny_model_dir):
    """GRPO trains on completions of the system prompt + question, rewarded by the grader: both are its inputs, as they
    are the rollouts'. A finished run is skipped with the same ones and refused (changes listed) with others."""
    from ssb.runfolder.artifacts import RunFolderError

    data = write_questions(tmp_path / "q.jsonl", 4)
    settings = {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "jsonl", "data.path": str(data),
                "grpo.num_generations": 2, "grpo.batch_size": 4, "grpo.max_steps": 1, "grpo.max_completion_length": 4,
                "distill.lora.r": 4, "progress": False}
    rewards = [lambda completions, **kw: [float(i % 2) for i in range(len(completions))]]
    first = run_grpo(load_config(None, settings), reward_funcs=rewards)
    assert run_grpo(load_config(None, settings), reward_funcs=rewards) == first  # finished with the same inputs: skipped
    system = tmp_path / "system.txt"
    system.write_text("You are a terse tutor. Put the answer in \\boxed{}.", encoding="utf-8")
    with pytest.raises(RunFolderError, match="system_prompt_sha256"):
        run_grpo(load_config(None, {**settings, "prompts.system": str(system)}), reward_funcs=rewards)
    with pytest.raises(RunFolderError, match="grading.timeout_s: 5.0 -> 1.0"):
        run_grpo(load_config(None, {**settings, "grading.timeout_s": 1.0}), reward_funcs=rewards)


def half(path: Path) -> None:
    """What a kill or a full disk mid-write leaves: the first half of the file."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damaged", ["trainer_state.json", "optimizer.pt", "adapter_model.safetensors"])
def test_a_kill_during_a_checkpoint_save_resumes_from_the_newest_complete_one(tmp_path, tiny_model_dir, monkeypatch, caplog, damaged):
    """Killed while checkpoint-2 was being written (everything but its trainer state, written last), or with a file of it
    torn, the rerun skips it, names the file, resumes from checkpoint-1 and finishes."""
    import trl

    data = write_questions(tmp_path / "q.jsonl", 4)
    settings = {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "jsonl", "data.path": str(data),
                "grpo.num_generations": 2, "grpo.batch_size": 4, "grpo.max_steps": 3, "grpo.max_completion_length": 4, "grpo.save_every": 1,
                "distill.lora.r": 4, "progress": False}
    rewards = [lambda completions, **kw: [float(i % 2) for i in range(len(completions))]]
    checkpoints = tmp_path / "run" / "grpo" / "checkpoints"
    plain, resumed_from = trl.GRPOTrainer, []

    class KilledInSecondSave(plain):
        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.state.global_step == 2:
                if damaged == "trainer_state.json":
                    (checkpoints / "checkpoint-2" / damaged).unlink()
                else:
                    half(checkpoints / "checkpoint-2" / damaged)
                raise KeyboardInterrupt  # where a kill -9 in the save stops the run

    class Recording(plain):
        def train(self, resume_from_checkpoint=None, **kwargs):
            resumed_from.append(resume_from_checkpoint)
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(trl, "GRPOTrainer", KilledInSecondSave)
    with pytest.raises(KeyboardInterrupt):
        run_grpo(load_config(None, settings), reward_funcs=rewards)
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    monkeypatch.setattr(trl, "GRPOTrainer", Recording)
    with caplog.at_level("WARNING", logger="ssb.checkpoints"):
        stats = run_grpo(load_config(None, settings), reward_funcs=rewards)
    assert resumed_from == [str(checkpoints / "checkpoint-1")]
    assert stats["steps"] == 3 and (tmp_path / "run" / "grpo" / "adapter" / "adapter_model.safetensors").exists()
    assert f"skipping {checkpoints / 'checkpoint-2'}: incomplete ({checkpoints / 'checkpoint-2' / damaged} " in caplog.text


def fake_trl_checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint folder holding what a TRL trainer's resume reads, each file in its real format."""
    import random

    import numpy as np
    import torch
    from safetensors.torch import save_file

    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    weight = torch.nn.Parameter(torch.randn(4, 8))
    optimizer = torch.optim.AdamW([weight])
    weight.grad = torch.randn(4, 8)
    optimizer.step()
    save_file({"base_model.model.layer.lora_A.weight": weight.detach()}, checkpoint / "adapter_model.safetensors")
    torch.save(optimizer.state_dict(), checkpoint / "optimizer.pt")
    torch.save(torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0).state_dict(), checkpoint / "scheduler.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()}, checkpoint / "rng_state.pth")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return checkpoint


def test_a_checkpoint_is_complete_only_with_every_file_a_resume_reads(tmp_path):
    from ssb.arms.trl import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step in (5, 10, 15, 20, 100):
        fake_trl_checkpoint(tmp_path, step)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-100")  # by step, not by name
    (tmp_path / "checkpoint-100" / "trainer_state.json").write_text('{"global_st')  # torn
    (tmp_path / "checkpoint-20" / "optimizer.pt").unlink()  # half removed by the rotation of old checkpoints
    (tmp_path / "checkpoint-15" / "rng_state.pth").unlink()
    (tmp_path / "checkpoint-10" / "adapter_model.safetensors").write_bytes(b"")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")


TORN = [("optimizer.pt", "half"), ("scheduler.pt", "half"), ("rng_state.pth", "half"), ("adapter_model.safetensors", "half"),
        ("optimizer.pt", "a flipped byte"), ("rng_state.pth", "a flipped byte"), ("adapter_model.safetensors", "padded")]


@pytest.mark.parametrize(("torn", "damage"), TORN)
def test_a_torn_file_in_the_newest_checkpoint_gives_way_to_the_one_before_naming_it(tmp_path, caplog, torn, damage):
    """A torch file is a zip whose members carry CRCs (torch does not check them); a safetensors header gives every tensor's
    extent, which must cover the file exactly."""
    from ssb.arms.trl import last_complete_checkpoint

    fake_trl_checkpoint(tmp_path, 1)
    path = fake_trl_checkpoint(tmp_path, 2) / torn
    data = path.read_bytes()
    middle = len(data) // 2
    damaged = {"half": data[:middle], "padded": data + bytes(64), "a flipped byte": data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]}
    path.write_bytes(damaged[damage])
    with caplog.at_level("WARNING", logger="ssb.checkpoints"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")
    assert f"skipping {tmp_path / 'checkpoint-2'}: incomplete ({path} does not load (" in caplog.text


def test_with_no_intact_checkpoint_training_starts_over_and_says_so(tmp_path, caplog):
    from ssb.arms.trl import last_complete_checkpoint

    for step in (1, 2):
        half(fake_trl_checkpoint(tmp_path, step) / "optimizer.pt")
    with caplog.at_level("WARNING", logger="ssb.checkpoints"):
        assert last_complete_checkpoint(tmp_path) is None
    torn = f"{tmp_path / 'checkpoint-1' / 'optimizer.pt'} does not load (not a whole torch archive: cut short, or not written by torch.save)"
    assert torn in caplog.text
    assert f"none of the 2 checkpoint(s) in {tmp_path} is intact: training starts over from step 0" in caplog.text


def test_a_checkpoint_file_that_would_unpickle_code_gives_way_without_running_it(tmp_path, caplog):
    import torch

    from ssb.arms.trl import last_complete_checkpoint

    marker = tmp_path / "code-ran"
    fake_trl_checkpoint(tmp_path, 1)
    torch.save({"state": RunsCode(marker)}, fake_trl_checkpoint(tmp_path, 2) / "optimizer.pt")
    with caplog.at_level("WARNING", logger="ssb.checkpoints"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")
    assert "optimizer.pt is not a checkpoint of tensors and plain values, refused (Unsupported global: GLOBAL " in caplog.text
    assert not marker.exists()


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


ENGINE = {"grpo.sampler": "engine", "backend.name": "openvino", "backend.openvino.weight_format": "fp32",
          "backend.openvino.inference_precision": "f32", "backend.openvino.kv_cache_gb": 1, "backend.batch_size": 4}


def engine_settings(tmp_path, tiny_model_dir, **more):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_questions(tmp_path / "q.jsonl", 6)
    return {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "model.dtype": "float32", "data.source": "jsonl",
            "data.path": str(data), "grpo.num_generations": 2, "grpo.batch_size": 4, "grpo.max_steps": 3, "grpo.max_completion_length": 6,
            "grpo.lr": 5e-2, "distill.lora.r": 4, "progress": False, "grpo.save_every": 1, **ENGINE, **more}


def recording_rewards(calls: list):
    """A reward that records each call's prompts and completion texts (and rewards odd lengths)."""
    def reward(prompts, completions, **kwargs):
        texts = [c[-1]["content"] if not isinstance(c, str) else c for c in completions]
        calls.append((prompts, texts))
        return [float(len(text) % 2) for text in texts]
    return [reward]


@pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")
def test_grpo_on_the_engine_sampler_trains_on_its_completions_and_records_the_lag(tmp_path, tiny_model_dir):
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from ssb.generation import SamplingParams, derive_seed
    from ssb.generation.policy_sampler import PolicySampler, lora_scaling, lora_state
    from ssb.lora import peft_lora_config
    from ssb.models import load_chat_format

    calls = []
    config = load_config(None, engine_settings(tmp_path, tiny_model_dir, **{"grpo.policy_lag": 1}))
    stats = run_grpo(config, reward_funcs=recording_rewards(calls))
    assert stats["sampler"] == "engine" and stats["steps"] == 3
    metrics = [m for m in read_jsonl(tmp_path / "run" / "grpo" / "metrics.jsonl") if "sampler/lag" in m]
    assert [m["sampler/lag"] for m in metrics] == [0, 1, 1]  # step 0 has no older weights; then one step back
    assert all(m["sampler/tokens_per_s"] > 0 for m in metrics)
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / "run" / "grpo" / "adapter"))
    assert any(p.abs().sum() > 0 for n, p in adapter.named_parameters() if "lora_B" in n)  # GRPO moved the LoRA
    # What the trainer was rewarded for at step 0 is the engine's draw from the initial adapter with the first call's
    # seed, the prompts rendered by ssb's chat format: redraw it outside the trainer.
    prompts, completions = calls[0]
    chat = load_chat_format(config.model)
    sampler = PolicySampler.from_config(config, chat, lora_scaling(peft_lora_config(config)), lag=0)
    sampler.push(0, lora_state(get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), peft_lora_config(config))))
    params = SamplingParams(n=2, temperature=config.grpo.temperature, top_k=config.grpo.top_k, max_new_tokens=6,
                            seed=derive_seed(config.seed, "grpo", 0, 0))
    redrawn, _ = sampler.generate([chat.prompt_ids(p) for p in prompts[::2]], params, 0)
    sampler.close()
    assert [chat.tokenizer.decode(s.token_ids, skip_special_tokens=True) for row in redrawn for s in row] == completions


@pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")
@pytest.mark.parametrize("saved_lagged_weights", [True, False, "torn"])
def test_a_killed_lagged_engine_run_resumes_with_the_same_completions(tmp_path, tiny_model_dir, monkeypatch, saved_lagged_weights, caplog):
    """Killed after checkpoint 2, a run with policy lag 1 resumes sampling from the step-1 weights the checkpoint saved:
    its third step's completions equal those of an uninterrupted run. Killed between the trainer's save of checkpoint 2
    and the end of ssb's save of the lagged weights into it, it resumes from checkpoint 1 instead, with the same
    completions."""
    import trl
    from transformers import TrainerCallback

    whole = []
    run_grpo(load_config(None, engine_settings(tmp_path / "a", tiny_model_dir, **{"grpo.policy_lag": 1})), reward_funcs=recording_rewards(whole))
    plain = trl.GRPOTrainer

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt  # after every other callback saved its part of checkpoint-2

    class KilledAfterSecondSave(plain):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Kill)

    parts = []
    settings = engine_settings(tmp_path / "b", tiny_model_dir, **{"grpo.policy_lag": 1})
    monkeypatch.setattr(trl, "GRPOTrainer", KilledAfterSecondSave)
    with pytest.raises(KeyboardInterrupt):
        run_grpo(load_config(None, settings), reward_funcs=recording_rewards(parts))
    checkpoint = tmp_path / "b" / "run" / "grpo" / "checkpoints" / "checkpoint-2"
    assert sorted(p.name for p in (checkpoint / "ssb_sampler").iterdir()) == ["step-1.safetensors", "step-2.safetensors"]
    if not saved_lagged_weights:  # cut off after the older weights were written, before the checkpoint's own (written last)
        (checkpoint / "ssb_sampler" / "step-2.safetensors").unlink()
    torn, was_torn = checkpoint / "ssb_sampler" / "step-1.safetensors", saved_lagged_weights == "torn"
    if was_torn:  # the older weights damaged afterwards: the checkpoint gives way as if never saved
        torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
        saved_lagged_weights = False
    monkeypatch.setattr(trl, "GRPOTrainer", plain)
    resumed = []
    with caplog.at_level("WARNING"):
        stats = run_grpo(load_config(None, settings), reward_funcs=recording_rewards(resumed))
    assert stats["steps"] == 3 and stats["resumed_from_step"] == (2 if saved_lagged_weights else 1)
    assert (f"{torn} does not load" in caplog.text) == was_torn
    assert parts == whole[:2] and len({str(c) for c in whole}) == 3  # each step's completions differ
    assert resumed == whole[stats["resumed_from_step"]:]  # the same completions as the uninterrupted run
    metrics = [m for m in read_jsonl(tmp_path / "b" / "run" / "grpo" / "metrics.jsonl") if "sampler/lag" in m]
    assert [m["sampler/lag"] for m in metrics] == [0, 1, 1]


@pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")
def test_the_lag_holds_when_completions_are_generated_every_other_step(tmp_path, tiny_model_dir):
    """Completions generated for two optimiser steps at a time (steps_per_generation 2, no accumulation) with lag 1
    come from the weights one step back: every step's weights are pushed, not only those of the steps that sample."""
    config = load_config(None, engine_settings(tmp_path, tiny_model_dir, **{"grpo.policy_lag": 1, "grpo.steps_per_generation": 2,
                                                                            "grpo.batch_size": 2, "grpo.max_steps": 4}))
    stats = run_grpo(config, reward_funcs=recording_rewards([]))
    assert stats["steps"] == 4
    metrics = [m for m in read_jsonl(tmp_path / "run" / "grpo" / "metrics.jsonl") if "sampler/lag" in m]
    assert [m["step"] for m in metrics] == [1, 3] and [m["sampler/lag"] for m in metrics] == [0, 1]
    # What was pushed at the end of step 4 is the trainer's own step-4 weights, as its checkpoint saved them.
    import torch
    from safetensors.torch import load_file

    checkpoint = tmp_path / "run" / "grpo" / "checkpoints" / "checkpoint-4"
    pushed, saved = load_file(str(checkpoint / "ssb_sampler" / "step-4.safetensors")), load_file(str(checkpoint / "adapter_model.safetensors"))
    assert pushed.keys() == saved.keys() and all(torch.equal(pushed[k], saved[k].float()) for k in saved)
    assert any(saved[k].abs().sum() > 0 for k in saved if "lora_B" in k)  # trained away from the zero initialisation


@pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")
def test_lagged_engine_samples_are_importance_corrected_by_trls_own_code(tmp_path, tiny_model_dir, monkeypatch):
    """With grpo.importance_sampling and a policy lag of 1, the ratio TRL's loss is given for each sampled token is
    exp(trainer's log-probability - engine's), truncated at the clip: the trainer's computed here by an independent
    forward of the weights that train, the engine's as the rollouts returned them. It is 1 at step 0 (the same weights,
    exact fp32 engine) and moves once the sampler lags, and the loss TRL trains on is weighted by it (it differs from
    the loss the same micro-step gives with every ratio set to 1)."""
    import torch
    import trl

    from ssb.arms import engine_rollouts

    rollouts, ratios, losses = [], [], []
    plain_call = engine_rollouts.TrainerSampling.__call__

    def recording_call(self, prompts, trainer):
        rollouts.append(plain_call(self, prompts, trainer))
        return rollouts[-1]

    class Recording(trl.GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            model, rollout = self.accelerator.unwrap_model(self.model), rollouts[-1]
            with torch.no_grad():
                for row, (prompt, completion, engine) in enumerate(zip(rollout["prompt_ids"], rollout["completion_ids"], rollout["logprobs"])):
                    logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1].float()
                    own = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]
                    expected = torch.clamp(torch.exp(own - torch.tensor(engine)), max=1.5)
                    ratios.append((self.state.global_step, output["importance_sampling_ratio"][row, : len(completion)], expected))
            return output

        def _compute_loss(self, model, inputs):
            loss = super()._compute_loss(model, inputs)
            with torch.no_grad():
                ones = torch.ones_like(inputs["importance_sampling_ratio"])
                unweighted = super()._compute_loss(model, {**inputs, "importance_sampling_ratio": ones})
            losses.append((self.state.global_step, loss.item(), unweighted.item()))
            return loss

    monkeypatch.setattr(engine_rollouts.TrainerSampling, "__call__", recording_call)
    monkeypatch.setattr(trl, "GRPOTrainer", Recording)
    settings = engine_settings(tmp_path, tiny_model_dir, **{"grpo.policy_lag": 1, "grpo.importance_sampling": "token_truncate",
                                                            "grpo.importance_sampling_clip": 1.5, "grpo.temperature": 1.0, "grpo.top_k": 0})
    def varied(completions, **kwargs):  # rewards that differ within a group, so that every step has advantages
        return [float(sum(map(ord, c[-1]["content"] if not isinstance(c, str) else c)) % 13) for c in completions]

    run_grpo(load_config(None, settings), reward_funcs=[varied])
    assert len(ratios) == 3 * 4  # three steps of four completions
    for step, given, expected in ratios:
        assert torch.allclose(given, expected, rtol=1e-3, atol=1e-4), (step, given, expected)
    assert all(torch.allclose(given, torch.ones_like(given), atol=5e-3) for step, given, _ in ratios if step == 0)
    assert max((given - 1).abs().max().item() for step, given, _ in ratios if step > 0) > 0.01
    assert len(losses) == 3 and all(abs(loss - unweighted) > 1e-3 for step, loss, unweighted in losses if step > 0)
    logged = [m for m in read_jsonl(tmp_path / "run" / "grpo" / "metrics.jsonl") if "sampler/lag" in m]
    assert len(logged) == 3 and all("sampling/importance_sampling_ratio/mean" in m for m in logged)


@pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")
def test_micro_steps_of_one_completion_give_the_update_of_one_padded_micro_step(tmp_path, tiny_model_dir):
    """An update of 4 completions trained as one padded micro-step or as 4 unpadded ones (batch 1, 4 accumulated, all 4
    generated together) samples the same completions and has the same loss and gradient: TRL's dapo loss normalises
    over the whole update, and padding is masked out."""
    from ssb.models import load_chat_format

    logged = {}
    for name, shape in {"padded": {"grpo.batch_size": 4}, "one-by-one": {"grpo.batch_size": 1, "grpo.gradient_accumulation_steps": 4,
                                                                      "grpo.steps_per_generation": 4}}.items():
        calls = []
        settings = engine_settings(tmp_path / name, tiny_model_dir, **{"grpo.max_steps": 1, "grpo.max_completion_length": 12, **shape})
        questions = tmp_path / name / "varied.jsonl"  # prompts of different lengths, so that a micro-step of two questions pads
        questions.write_text("".join(json.dumps({"question": f"What is {i}?" + " Think." * i, "answer": str(i)}) + "\n" for i in range(6)))
        settings["data.path"] = str(questions)
        run_grpo(load_config(None, settings), reward_funcs=recording_rewards(calls))
        step = next(m for m in read_jsonl(tmp_path / name / "run" / "grpo" / "metrics.jsonl") if "grad_norm" in m)
        logged[name] = (calls, step["loss"], step["grad_norm"])
    (calls, loss, grad_norm), (calls_1, loss_1, grad_norm_1) = logged["padded"], logged["one-by-one"]
    assert [c for _, texts in calls for c in texts] == [c for _, texts in calls_1 for c in texts]
    chat = load_chat_format(load_config(None, settings).model)
    assert len({len(chat.prompt_ids(p)) for p in calls[0][0]}) > 1  # the padded micro-step did pad (its two questions' prompts)
    assert grad_norm > 0 and grad_norm_1 == pytest.approx(grad_norm, rel=1e-4)
    assert loss_1 == pytest.approx(loss, rel=1e-4, abs=1e-7)


def test_the_sampler_choice_follows_the_backend_and_refuses_what_it_cannot_do(tmp_path, tiny_model_dir, caplog):
    from ssb.arms.grpo import sampler_name

    def name(**settings):
        return sampler_name(load_config(None, {"model.name_or_path": str(tiny_model_dir), "run_dir": str(tmp_path), **settings}))

    assert name(**{"backend.name": "hf"}) == "trl"
    assert name(**{"backend.name": "hf", "grpo.use_vllm": True}) == "trl-vllm"
    if importlib.util.find_spec("openvino_genai"):
        assert name(**{"backend.name": "openvino"}) == "engine"
        assert name(**{"backend.name": "openvino", "grpo.sampler": "trl"}) == "trl"
        with pytest.raises(ValueError, match="grpo.importance_sampling: the engine reports the temperature-1 .* \\(got 0.8, 50, 1.0\\)"):
            name(**{"grpo.sampler": "engine", "grpo.importance_sampling": "sequence_mask"})
        corrected = {"grpo.sampler": "engine", "grpo.importance_sampling": "token_mask", "grpo.temperature": 1.0, "grpo.top_k": 0}
        assert name(**corrected) == "engine"
        with pytest.raises(ValueError, match="grpo.importance_sampling: with distill.lora.dropout 0.1 .* set the dropout to 0"):
            name(**corrected, **{"distill.lora.dropout": 0.1})
        with pytest.raises(ValueError, match="grpo.importance_sampling_clip: set to 5.0, but no correction runs .*auto with the engine"):
            name(**{"grpo.sampler": "engine", "grpo.importance_sampling_clip": 5.0})
        with caplog.at_level("WARNING", logger="ssb.arms.grpo"):
            assert name(**corrected, **{"grpo.policy_lag": 2}) == "engine" and not caplog.records
            assert name(**{"grpo.sampler": "engine", "grpo.policy_lag": 2}) == "engine"
        assert [r.getMessage() for r in caplog.records] == [
            "grpo.policy_lag 2 with no importance-sampling correction (grpo.importance_sampling auto): the loss treats completions "
            "of the weights 2 steps back as the current policy's"]
    with pytest.raises(ValueError, match="grpo.sampler: engine and grpo.use_vllm"):
        name(**{"grpo.sampler": "engine", "grpo.use_vllm": True})
    with pytest.raises(ValueError, match="grpo.importance_sampling: TRL's transformers generation samples the current weights exactly"):
        name(**{"grpo.sampler": "trl", "grpo.importance_sampling": "token_mask"})
    with pytest.raises(ValueError, match="grpo.policy_lag: only the engine sampler"):
        name(**{"backend.name": "hf", "grpo.policy_lag": 2})


@pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")
def test_a_run_resumed_in_its_second_epoch_trains_it_in_the_uninterrupted_order(tmp_path, tiny_model_dir, monkeypatch):
    """Six questions, two per step: epoch 2 starts at step 4. Killed after checkpoint 3 and resumed, the run sees epoch 2's
    questions in the order an uninterrupted run does (TRL's sampler alone would replay epoch 1's: ssb.arms.trl.epoch_seeded)."""
    import trl
    from transformers import TrainerCallback

    more = {"grpo.max_steps": 5, "grpo.epochs": 2.0}
    whole = []
    run_grpo(load_config(None, engine_settings(tmp_path / "a", tiny_model_dir, **more)), reward_funcs=recording_rewards(whole))
    plain = trl.GRPOTrainer

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    class KilledAfterThirdSave(plain):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Kill)

    parts = []
    settings = engine_settings(tmp_path / "b", tiny_model_dir, **more)
    monkeypatch.setattr(trl, "GRPOTrainer", KilledAfterThirdSave)
    with pytest.raises(KeyboardInterrupt):
        run_grpo(load_config(None, settings), reward_funcs=recording_rewards(parts))
    monkeypatch.setattr(trl, "GRPOTrainer", plain)
    run_grpo(load_config(None, settings), reward_funcs=recording_rewards(parts))
    questions = [[p[-1]["content"] for p in prompts[::2]] for prompts, _ in whole]
    assert [[p[-1]["content"] for p in prompts[::2]] for prompts, _ in parts] == questions
    assert len({q for step in questions[:3] for q in step}) == 6  # epoch 1 saw every question once
    assert questions[3:5] != questions[:2]  # epoch 2 in its own order, not epoch 1's again
    assert parts == whole
