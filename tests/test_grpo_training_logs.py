"""The GRPO log summary's per-segment pace (studies/evidence/grpo_training_logs.py --split-at)."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "grpo_training_logs", Path(__file__).resolve().parents[1] / "studies" / "evidence" / "grpo_training_logs.py")
logs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(logs)


def row(step_time: float, length: float, sampler: float) -> dict:
    return {"step_time": step_time, "completions/mean_length": length, "sampler/tokens_per_s": sampler}


def test_segments_cut_after_the_given_updates_with_their_own_pace():
    rows = [row(10, 100, 50), row(30, 200, 70), row(20, 300, 60),  # updates 1-3
            row(40, 100, 90), row(40, 300, 80)]  # updates 4-5
    first, second = logs.segments(rows, [3])
    # By hand: updates 1-3 take 60 s and generate (100 + 200 + 300) x 8 = 4,800 tokens; 4-5 take 80 s, 3,200 tokens.
    assert first == {"updates": "1-3", "seconds": 60, "generated_tokens": 4800, "median_update_s": 20.0,
                     "mean_completion_length": 200.0, "tokens_per_update_second": 80.0, "sampler_median_tokens_per_s": 60.0}
    assert second == {"updates": "4-5", "seconds": 80, "generated_tokens": 3200, "median_update_s": 40.0,
                      "mean_completion_length": 200.0, "tokens_per_update_second": 40.0, "sampler_median_tokens_per_s": 85.0}


def test_a_run_sampled_by_trl_has_no_sampler_pace():
    rows = [{"step_time": 5, "completions/mean_length": 10}, {"step_time": 15, "completions/mean_length": 30}]
    (only,) = logs.segments(rows, [])
    assert only["updates"] == "1-2" and only["tokens_per_update_second"] == 16.0
    assert "sampler_median_tokens_per_s" not in only
