"""The GRPO log summary's per-segment pace (studies/evidence/grpo_training_logs.py --split-at)."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import write_gz

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "evidence" / "grpo_training_logs.py"


def row(step_time: float, length: float, sampler: float | None = None) -> dict:
    return {"step_time": step_time, "completions/mean_length": length, "reward": 0.5, "completions/clipped_ratio": 0.0, "entropy": 1.0,
            **({"sampler/tokens_per_s": sampler} if sampler is not None else {})}


def summarised(results: Path, *args: str) -> dict[str, tuple[dict, list[dict]]]:
    """{run: (its summary, its segments)} as the script prints them."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--results", str(results), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    runs, segments = {}, []
    for line in done.stdout.splitlines():
        if line.startswith(" "):  # a segment of the run printed last
            segments.append(json.loads(line))
        else:
            name, _, summary = line.partition(" ")
            segments = []
            runs[name] = (json.loads(summary), segments)
    return runs


def test_segments_cut_after_the_given_updates_with_their_own_pace(tmp_path):
    rows = [row(10, 100, 50), row(30, 200, 70), row(20, 300, 60),  # updates 1-3
            row(40, 100, 90), row(40, 300, 80)]  # updates 4-5
    write_gz(tmp_path / "grpo-tokens" / "grpo" / "metrics.jsonl.gz", [*rows, {"train_runtime": 140}])  # the trainer's closing summary
    summary, (first, second) = summarised(tmp_path, "--split-at", "3")["grpo-tokens"]
    assert summary["updates"] == 5 and summary["train_s"] == 140
    # By hand: updates 1-3 take 60 s and generate (100 + 200 + 300) x 8 = 4,800 tokens; 4-5 take 80 s, 3,200 tokens.
    assert first == {"updates": "1-3", "seconds": 60, "generated_tokens": 4800, "median_update_s": 20.0,
                     "mean_completion_length": 200.0, "tokens_per_update_second": 80.0, "sampler_median_tokens_per_s": 60.0}
    assert second == {"updates": "4-5", "seconds": 80, "generated_tokens": 3200, "median_update_s": 40.0,
                      "mean_completion_length": 200.0, "tokens_per_update_second": 40.0, "sampler_median_tokens_per_s": 85.0}


def test_a_run_sampled_by_trl_has_no_sampler_pace(tmp_path):
    write_gz(tmp_path / "grpo" / "grpo" / "metrics.jsonl.gz", [row(5, 10), row(15, 30)])
    assert summarised(tmp_path)["grpo"][1] == []  # no cut asked for: no segments
    summary, segments = summarised(tmp_path, "--arm", "grpo", "--split-at", "1")["grpo"]
    assert [(s["updates"], s["tokens_per_update_second"]) for s in segments] == [("1-1", 16.0), ("2-2", 16.0)]
    assert all("sampler_median_tokens_per_s" not in s for s in segments) and "sampling_share" not in summary
