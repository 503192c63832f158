"""The GRPO control through TRL on a tiny random model, on CPU."""

import hashlib
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytest.importorskip("trl")

from ssb.config import load_config  # noqa: E402
from ssb.evaluation import run_eval  # noqa: E402
from ssb.grpo import correctness_reward, format_reward, run_grpo  # noqa: E402
from test_evaluation import write_benchmark  # noqa: E402
from test_stages import write_questions  # noqa: E402


def test_reward_functions_are_thin_adapters_over_the_grader():
    completions = [[{"role": "assistant", "content": "so \\boxed{18.00}"}], [{"role": "assistant", "content": "\\boxed{17}"}], "no box"]
    assert correctness_reward(completions, gold=["18", "18", "18"]) == [1.0, 0.0, 0.0]
    assert format_reward(completions) == [1.0, 1.0, 0.0]


def test_grpo_steps_change_lora_and_the_adapter_is_evaluable(tmp_path, tiny_model_dir):
    data = write_questions(tmp_path / "q.jsonl", 4)
    config = load_config(None, {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "jsonl",
                                "data.path": str(data), "grpo.num_generations": 2, "grpo.batch_size": 4, "grpo.max_steps": 2,
                                "grpo.max_completion_length": 6, "grpo.lr": 1e-2, "distill.lora.r": 4, "progress": False, "backend.name": "hf"})
    calls = []

    def reward(completions, gold, **kwargs):
        """TRL's signature; the random model never boxes an answer, so the grade is mixed with a
        deterministic pseudo-random term to give the group advantages something to work with."""
        calls.append((list(completions), list(gold), sorted(kwargs), [len(ids) for ids in kwargs["completion_ids"]]))
        graded = correctness_reward(completions, gold)
        return [g + (hashlib.sha256(c[-1]["content"].encode()).digest()[0] % 2) for g, c in zip(graded, completions)]

    weights_file = Path(tiny_model_dir) / "model.safetensors"
    base_before = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    stats = run_grpo(config, reward_funcs=[reward])
    assert stats["steps"] == 2
    assert stats["generated_tokens"] == sum(sum(lengths) for *_, lengths in calls)  # the report's compute column
    completions, gold, kwargs, _ = calls[0]
    assert len(completions) == len(gold) == 4 and completions[0][-1]["role"] == "assistant"
    assert set(gold) <= {"0", "1", "2", "3"} and {"prompts", "completion_ids", "id"} <= set(kwargs)
    adapter = load_file(tmp_path / "run" / "grpo" / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    assert not any("lm_head" in k or "embed" in k for k in adapter)
    assert (tmp_path / "run" / "grpo" / "metrics.jsonl").read_text().strip()
    assert hashlib.sha256(weights_file.read_bytes()).hexdigest() == base_before  # base weights untouched

    write_benchmark(tmp_path / "bench", "gsm8k", 2)
    eval_config = load_config(None, {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir),
                                     "data.data_dir": str(tmp_path / "bench"), "eval.benchmarks": ["gsm8k"], "eval.skip_base": True,
                                     "eval.adapters": [f"grpo={tmp_path / 'run' / 'grpo' / 'adapter'}"],
                                     "eval.sampling.max_new_tokens": 4, "progress": False, "backend.name": "hf"})
    assert run_eval(eval_config) == {"grpo": {"gsm8k": 0.0}}
    assert json.loads((tmp_path / "run/eval/grpo/gsm8k.summary.json").read_text())["n_questions"] == 2
