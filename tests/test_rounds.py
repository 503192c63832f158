"""Iterated SSB (rounds > 1) end to end on a tiny random model: scripted rollouts and refinement, real
teacher, distillation, merge and evaluation, and the per-round report."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import rounds_config, sha
from scripted import ScriptedBackend, rollout_script, rounds_script
from ssb.chat import ChatFormat, tokenizer_hash
from ssb.cli import build_parser
from ssb.config import ConfigError, load_config
from ssb.distillation import short_yield
from ssb.models import load_tokenizer
from ssb.report import cell, write_report
from ssb.report.rounds import rounds_section, rounds_sections, rounds_table
from ssb.rounds import merge_round_model, round_config
from ssb.run import run_all
from ssb.runfolder.artifacts import RunFolderError, read_jsonl, write_json_atomic, write_jsonl_atomic
from ssb.stats.metrics import mean_with_ci

# Files a plain run writes that depend on nothing but config and seed (summaries and metrics carry timings).
SAME_BYTES = ["rollouts.jsonl", "refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl", "teacher/targets-00000.safetensors",
              "distill/adapter/adapter_model.safetensors", "distill/adapter/adapter_config.json",
              "eval/base/gsm8k.samples.jsonl", "eval/ssb/gsm8k.samples.jsonl"]


def question_number(user: str) -> int:
    return int(re.search(r"Question (\d+)", user).group(1))


def ids(folder: Path) -> list[str]:
    return [r["id"] for r in read_jsonl(folder / "rollouts.jsonl")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """A plain run, and a fresh-data run of 3 rounds from the same config that stops in round 3 (no refinement kept)."""
    folder = tmp_path_factory.mktemp("rounds")
    plain = rounds_config(folder, tiny_model_dir, "plain")
    config = rounds_config(folder, tiny_model_dir, "rounds", rounds=3)
    backend = ScriptedBackend(ChatFormat(load_tokenizer(plain.model)), rounds_script)
    run_all(plain, backend=backend)
    result = run_all(config, backend=backend)
    return Path(plain.run_dir), Path(config.run_dir), config, result, backend


def test_round_one_is_a_plain_run_byte_for_byte(runs):
    plain, run, _, result, _ = runs
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    for name in SAME_BYTES:
        assert sha(run / name) == sha(plain / name), name
    # The comparison can fail: round 2 ran the same stages on other questions with another model.
    assert sha(run / "round-2/rollouts.jsonl") != sha(plain / "rollouts.jsonl")
    assert sha(run / "round-2/distill/adapter/adapter_model.safetensors") != sha(plain / "distill/adapter/adapter_model.safetensors")


def test_round_two_starts_from_the_merged_model(runs, tiny_model_dir):
    _, run, config, _, _ = runs
    model = run / "round-2" / "model"
    merged, base = load_file(model / "model.safetensors"), load_file(Path(tiny_model_dir) / "model.safetensors")
    adapter = load_file(run / "distill/adapter/adapter_model.safetensors")
    scale = config.distill.lora.alpha / config.distill.lora.r
    assert set(merged) == set(base)
    changed = 0
    for name, weight in base.items():
        a_key = "base_model.model." + name.removesuffix(".weight") + ".lora_A.weight"
        if a_key in adapter:  # W + (alpha / r) B A, written out here rather than by PEFT
            expected = weight + scale * adapter[a_key.replace("lora_A", "lora_B")] @ adapter[a_key]
            assert torch.allclose(merged[name], expected, rtol=0, atol=1e-6), name
            changed += not torch.equal(merged[name], weight)
        else:
            assert torch.equal(merged[name], weight), name
    assert changed == 14  # 7 projections x 2 layers
    # Same tokenizer and chat template, and the same stop tokens, as the base model.
    assert tokenizer_hash(load_tokenizer(config.model)) == tokenizer_hash(load_tokenizer(round_config(config, 2, str(model)).model))
    # Round 2 ran every stage on it (policy and teacher), and its adapter was trained on it.
    manifest = json.loads((run / "round-2/manifest.json").read_text())
    assert {"merge", "rollouts", "refine", "teacher", "distill", "eval/ssb/gsm8k"} == set(manifest["stages"])
    assert all(manifest["stages"][s]["model"] == str(model) for s in ("rollouts", "refine", "teacher", "distill"))
    assert manifest["stages"]["merge"]["inputs"]["model"]["name_or_path"] == str(tiny_model_dir)
    assert manifest["stages"]["merge"]["adapter"] == str(run / "distill/adapter")
    trained_on = json.loads((run / "round-2/distill/adapter/adapter_config.json").read_text())["base_model_name_or_path"]
    assert trained_on == str(model)
    rounds = json.loads((run / "rounds.json").read_text())["per_round"]
    assert [r["started_from"] for r in rounds] == [{"model": str(tiny_model_dir), "adapter": None},
                                                   {"model": str(tiny_model_dir), "adapter": str(run / "distill/adapter")},
                                                   {"model": str(model), "adapter": str(run / "round-2/distill/adapter")}]


def test_fresh_rounds_take_the_next_slice(runs):
    _, run, _, _, _ = runs
    assert ids(run) == [f"jsonl-train-{i}" for i in range(0, 8)]
    assert ids(run / "round-2") == [f"jsonl-train-{i}" for i in range(8, 16)]
    assert ids(run / "round-3") == [f"jsonl-train-{i}" for i in range(16, 24)]


def test_a_round_that_keeps_nothing_stops_the_run(runs):
    _, run, _, result, _ = runs
    assert result["stopped"] == ("round 3: refine kept no solution (4 mixed of 8 questions): nothing to train on, "
                                 "so teacher, distill and eval did not run")
    assert result["rounds"][2]["pass@1"] is None and set(result["rounds"][1]["pass@1"]) == {"ssb"}
    assert not any((run / "round-3" / name).exists() for name in ("teacher", "distill", "eval"))
    assert json.loads((run / "rounds.json").read_text())["stopped"] == result["stopped"]
    assert f"**Stopped** at {result['stopped']}." in (run / "report.md").read_text()


def test_report_shows_the_per_round_curve(runs):
    _, run, _, _, _ = runs
    report = (run / "report.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if re.match(r"\| (0 \(base\)|\d) \| gsm8k \|", line)}
    assert list(rows) == ["0 (base)", "1", "2", "3"]
    summary = lambda folder, model: json.loads((folder / f"eval/{model}/gsm8k.summary.json").read_text())  # noqa: E731
    round_2 = json.loads((run / "round-2/stats.json").read_text())["distill"]
    round_2_tokens = round_2["mean_solution_tokens"]
    base = summary(run, "base")
    dropped = lambda folder: " / ".join(str(json.loads((folder / "stats.json").read_text())["refine"]["dropped"][f"refinement-{why}"])  # noqa: E731
                                        for why in ("wrong", "no-answer", "truncated"))
    assert rows["0 (base)"] == f"| 0 (base) | gsm8k | - | - | - | - | - | - | {cell(base)} | {base['mean_completion_tokens']:.0f} |"
    assert rows["1"].startswith(f"| 1 | gsm8k | 8 | 4 | 2 | {dropped(run)} | ") and cell(summary(run, "ssb")) in rows["1"]
    assert rows["2"] == (f"| 2 | gsm8k | 8 | 4 | 4 | {dropped(run / 'round-2')} | {round_2['examples']} | {round_2_tokens:.0f} tokens | "
                         f"{cell(summary(run / 'round-2', 'ssb'))} | {summary(run / 'round-2', 'ssb')['mean_completion_tokens']:.0f} |")
    assert rows["3"] == f"| 3 | gsm8k | 8 | 4 | 0 | {dropped(run / 'round-3')} | - | - | not evaluated | - |"
    assert dropped(run / "round-3") == "4 / 0 / 0"  # round 3 (questions 16-23): its 4 mixed questions refine wrong
    assert (run / "rounds.png").stat().st_size > 0
    differences = [line.split(" | ")[0].strip("| ") for line in report.splitlines() if line.startswith("| round ") and "- round" in line]
    assert differences == ["round 1 - round 0", "round 2 - round 1", "round 2 - round 0"]


def fake_eval(folder: Path, model: str, correct: list[int]) -> None:
    """An evaluation of ``model`` in ``folder`` whose question q is answered right when correct[q]."""
    write_jsonl_atomic(folder / f"eval/{model}/gsm8k.samples.jsonl", [{"index": q, "id": f"q{q}", "completions": [{"correct": bool(c)}]}
                                                                     for q, c in enumerate(correct)])
    write_json_atomic(folder / f"eval/{model}/gsm8k.summary.json", {"pass@1": mean_with_ci(correct, binary=True), "mean_completion_tokens": 7,
                                                                  "samples_per_question": 1})


def test_round_differences_are_paired_on_the_questions(tmp_path):
    """Each round against the previous one, round 1 and round 0, on made-up scores, recomputed here by hand."""
    correct = {0: [1, 0, 0, 0, 0, 0], 1: [1, 1, 1, 0, 0, 0], 2: [1, 1, 0, 1, 1, 1], 3: [0, 1, 1, 1, 1, 1]}
    fake_eval(tmp_path, "base", correct[0])
    fake_eval(tmp_path, "ssb", correct[1])
    for r in (2, 3):
        fake_eval(tmp_path / f"round-{r}", "ssb", correct[r])
    write_json_atomic(tmp_path / "rounds.json", {"rounds": 3, "rounds_data": "same", "stopped": None,
                                                 "per_round": [{"round": 1, "folder": "."}, {"round": 2, "folder": "round-2"},
                                                               {"round": 3, "folder": "round-3"}]})
    for folder in (tmp_path, tmp_path / "round-2", tmp_path / "round-3"):
        dropped = {"refinement-wrong": 1, "refinement-no-answer": 0, "refinement-truncated": 1}
        write_json_atomic(folder / "stats.json", {"refine": {"questions": 9, "mixed": 5, "kept": 3, "dropped": dropped},
                                                  "distill": {"examples": 2, "mean_solution_tokens": 50.4}})
    lines = rounds_section(tmp_path, tmp_path)
    assert "| 2 | gsm8k | 9 | 5 | 3 | 1 / 0 / 1 | 2 | 50 tokens | 83.3 ± 26.7 (n=6) | 7 |" in lines
    pairs = [(1, 0), (2, 1), (2, 0), (3, 2), (3, 1), (3, 0)]  # round 3 also against round 1: what rounds after the first add
    named = [line.split(" | ")[0].strip("| ") for line in lines if line.startswith("| round ") and " - " in line]
    assert named == [f"round {a} - round {b}" for a, b in pairs]
    for a, b in pairs:
        diffs = [x - y for x, y in zip(correct[a], correct[b])]
        row = next(line for line in lines if line.startswith(f"| round {a} - round {b} |"))
        assert row.startswith(f"| round {a} - round {b} | gsm8k | {100 * sum(diffs) / 6:+.1f} | ")
        assert f"| {diffs.count(1)} / {diffs.count(-1)} (n=6) |" in row
    assert (tmp_path / "rounds.png").stat().st_size > 0


def test_the_answer_first_drops_show_only_where_a_round_had_some(tmp_path):
    """Stats written before refine.answer_first_chars (refine.prompt_terms) existed lack the reason; it counts as 0 beside a round
    that has it."""
    fake_eval(tmp_path, "base", [1, 0])
    fake_eval(tmp_path, "ssb", [1, 1])
    fake_eval(tmp_path / "round-2", "ssb", [0, 1])
    write_json_atomic(tmp_path / "rounds.json", {"rounds": 2, "rounds_data": "fresh", "stopped": None,
                                                 "per_round": [{"round": 1, "folder": "."}, {"round": 2, "folder": "round-2"}]})
    dropped = {"refinement-wrong": 3, "refinement-no-answer": 2, "refinement-truncated": 1}
    for folder, more in ((tmp_path, {}), (tmp_path / "round-2", {"refinement-answer-first": 0})):
        write_json_atomic(folder / "stats.json", {"refine": {"questions": 9, "mixed": 7, "kept": 1, "dropped": dropped | more},
                                                  "distill": {"examples": 1}})
    assert "| refinements wrong / no answer / truncated |" in rounds_table(tmp_path, ["gsm8k"])[0]
    stats = json.loads((tmp_path / "round-2/stats.json").read_text())
    stats["refine"]["dropped"]["refinement-answer-first"] = 4
    write_json_atomic(tmp_path / "round-2/stats.json", stats)
    lines = rounds_table(tmp_path, ["gsm8k"])
    assert "| refinements wrong / no answer / truncated / answer first |" in lines[0]
    assert lines[3].startswith("| 1 | gsm8k | 9 | 7 | 1 | 3 / 2 / 1 / 0 | 1 |")
    assert lines[4].startswith("| 2 | gsm8k | 9 | 7 | 1 | 3 / 2 / 1 / 4 | 1 |")
    stats["refine"]["dropped"]["refinement-prompt-terms"] = 5  # refine.prompt_terms: its column comes after answer-first
    write_json_atomic(tmp_path / "round-2/stats.json", stats)
    lines = rounds_table(tmp_path, ["gsm8k"])
    assert "| refinements wrong / no answer / truncated / answer first / prompt terms |" in lines[0]
    assert lines[3].startswith("| 1 | gsm8k | 9 | 7 | 1 | 3 / 2 / 1 / 0 / 0 | 1 |")
    assert lines[4].startswith("| 2 | gsm8k | 9 | 7 | 1 | 3 / 2 / 1 / 4 / 5 | 1 |")


def test_a_second_run_skips_finished_rounds_and_refuses_a_stale_one(runs):
    _, run, config, result, backend = runs
    folders = [run, run / "round-2", run / "round-3"]
    before = {f: (f / "manifest.json").read_bytes() for f in folders}
    model_time = (run / "round-2/model/model.safetensors").stat().st_mtime_ns
    calls = len(backend.calls)
    again = run_all(config, backend=backend)
    assert len(backend.calls) == calls  # no generation (rollouts, refine)
    assert {f: (f / "manifest.json").read_bytes() for f in folders} == before  # no stage finished again (eval, training, merge)
    assert (run / "round-2/model/model.safetensors").stat().st_mtime_ns == model_time
    assert again["stopped"] == result["stopped"] and [r["pass@1"] for r in again["rounds"]] == [r["pass@1"] for r in result["rounds"]]

    adapter = run / "distill/adapter/adapter_model.safetensors"
    original = adapter.read_bytes()
    try:
        adapter.write_bytes(original + b" ")  # round 1 retrained after round 2 was built on it
        stale = r"round-2 was built on another model or adapter[\s\S]*adapter_sha256: '[0-9a-f]+' -> '[0-9a-f]+'[\s\S]*are stale"
        with pytest.raises(RunFolderError, match=stale):
            merge_round_model(config, run / "round-2")
    finally:
        adapter.write_bytes(original)


def test_an_interrupted_merge_is_redone(runs, tmp_path):
    _, run, config, _, _ = runs
    leftover = tmp_path / "round-2" / ".model.staging"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{half written")
    path = merge_round_model(config, tmp_path / "round-2")
    assert path == str(tmp_path / "round-2" / "model") and not leftover.exists()
    assert sha(Path(path) / "model.safetensors") == sha(run / "round-2/model/model.safetensors")


def test_a_removed_merged_model_is_merged_again_from_the_recorded_adapter(runs, tmp_path):
    _, run, config, _, _ = runs
    copy = tmp_path / "round-2"
    shutil.copytree(run / "round-2", copy, ignore=shutil.ignore_patterns("model"))
    path = merge_round_model(config, copy)
    assert sha(Path(path) / "model.safetensors") == sha(run / "round-2/model/model.safetensors")
    merge = json.loads((copy / "manifest.json").read_text())["stages"]["merge"]
    assert merge["merged_sha256"] == sha(Path(path) / "model.safetensors")[:16]
    shutil.rmtree(path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["stages"]["merge"]["merged_sha256"] = "0" * 16  # as if the weights had come out otherwise the first time
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="merged again from the recorded adapter, but into other weights"):
        merge_round_model(config, copy)
    assert not Path(path).exists()
    adapter = run / "distill/adapter/adapter_model.safetensors"
    original = adapter.read_bytes()
    try:  # another adapter than the one recorded: the rounds built on the removed model are stale, nothing merged
        adapter.write_bytes(original + b" ")
        with pytest.raises(RunFolderError, match="are stale"):
            merge_round_model(config, copy)
        assert not Path(path).exists()
    finally:
        adapter.write_bytes(original)


def test_same_data_and_the_sft_control(tmp_path, tiny_model_dir):
    config = rounds_config(tmp_path, tiny_model_dir, "sft", rounds=2, rounds_data="same", **{"distill.objective": "sft"})
    result = run_all(config, backend=ScriptedBackend(ChatFormat(load_tokenizer(config.model)), rounds_script))
    run = Path(config.run_dir)
    assert "stopped" not in result and ids(run / "round-2") == ids(run)
    for folder in (run, run / "round-2"):  # hard labels: no teacher stage in any round
        assert "teacher" not in json.loads((folder / "manifest.json").read_text())["stages"] and not (folder / "teacher").exists()
    # The SFT control's adapter is evaluated as "sft", and the per-round curve reads it under that name.
    assert (run / "eval/sft/gsm8k.summary.json").exists() and not (run / "eval/ssb").exists()
    assert (run / "round-2/eval/sft/gsm8k.summary.json").exists() and not (run / "round-2/eval/base").exists()
    assert set(result["rounds"][1]["pass@1"]) == {"sft"}
    round_2 = json.loads((run / "round-2/eval/sft/gsm8k.summary.json").read_text())
    assert any(line.startswith("| 2 | gsm8k | ") and cell(round_2) in line for line in (run / "report.md").read_text().splitlines())


def test_a_plain_run_that_keeps_nothing_stops_before_training(tmp_path, tiny_model_dir):
    def wrong(user, s):
        return f"Wrong. \\boxed{{{question_number(user) + 1}}}" if user.startswith("We have two") else rollout_script(user, s)

    config = rounds_config(tmp_path, tiny_model_dir, "run")
    result = run_all(config, backend=ScriptedBackend(ChatFormat(load_tokenizer(config.model)), wrong))
    run = Path(config.run_dir)
    assert result["stopped"].startswith("refine kept no solution (4 mixed of 8 questions)") and result["pass@1"] is None
    assert not (run / "distill").exists() and f"**Stopped**: {result['stopped']}." in (run / "report.md").read_text()


def test_a_run_that_keeps_too_few_to_train_stops_before_training(tmp_path, tiny_model_dir):
    config = rounds_config(tmp_path, tiny_model_dir, "few", **{"distill.heldout_examples": 40})
    result = run_all(config, backend=ScriptedBackend(ChatFormat(load_tokenizer(config.model)), rounds_script))
    run = Path(config.run_dir)
    kept = json.loads((run / "stats.json").read_text())["refine"]["kept"]
    assert 0 < kept < 40 + config.distill.micro_batch_size
    assert result["stopped"].startswith(f"refine kept {kept} solution(s), fewer than distill needs "
                                        f"(40 held out + a micro-batch of {config.distill.micro_batch_size})")
    assert result["pass@1"] is None and not (run / "teacher").exists() and not (run / "distill").exists()
    assert f"**Stopped**: {result['stopped']}." in (run / "report.md").read_text()


def test_a_run_whose_kept_solutions_are_too_short_stops_before_training(tmp_path, tiny_model_dir):
    config = rounds_config(tmp_path, tiny_model_dir, "short", **{"distill.min_solution_tokens": 10_000})
    result = run_all(config, backend=ScriptedBackend(ChatFormat(load_tokenizer(config.model)), rounds_script))
    run = Path(config.run_dir)
    kept = json.loads((run / "stats.json").read_text())["refine"]["kept"]
    trainable = kept - config.distill.heldout_examples
    assert kept >= config.distill.heldout_examples + config.distill.micro_batch_size  # enough without the threshold
    assert result["stopped"] == (f"refine kept {kept} solution(s), but {trainable} of the {trainable} not held out have fewer "
                                 f"than distill.min_solution_tokens=10000 solution tokens, leaving 0, fewer than a micro-batch of "
                                 f"{config.distill.micro_batch_size}: too few to train on, so teacher, distill and eval did not run")
    assert result["pass@1"] is None and not (run / "teacher").exists() and not (run / "distill").exists()
    assert f"**Stopped**: {result['stopped']}." in (run / "report.md").read_text()
    # `ssb report` on the folder alone, without the config, gives the same reason.
    assert f"**Stopped**: {result['stopped']}." in write_report(run, out=tmp_path / "again").read_text()


def test_min_solution_tokens_splits_as_distill_does_and_stops_below_a_micro_batch(tmp_path, tiny_model_dir):
    """Refined solutions of different lengths: the stop comes exactly where fewer than a micro-batch remain,
    and a run that goes on trains on the examples the check counted."""
    def varied(user, s):
        if not user.startswith("We have two"):
            return rollout_script(user, s)
        i = int(re.search(r"-----\nQuestion (\d+)", user).group(1))
        return "step " * (3 * i) + f"so \\boxed{{{i}}}"

    settings = {"distill.batch_size": 2, "distill.micro_batch_size": 2, "distill.heldout_examples": 0}
    stopped = rounds_config(tmp_path, tiny_model_dir, "varied", **settings, **{"distill.min_solution_tokens": 10_000})
    chat = ChatFormat(load_tokenizer(stopped.model))
    backend = ScriptedBackend(chat, varied)
    assert run_all(stopped, backend=backend)["stopped"]  # refine done, nothing trained
    run = Path(stopped.run_dir)
    lengths = sorted((len(chat.tokenizer(r["messages"][-1]["content"], add_special_tokens=False)["input_ids"])
                      for r in read_jsonl(run / "student.jsonl")), reverse=True)
    assert len(lengths) >= 3 and len(set(lengths)) == len(lengths)  # distinct, so the boundary is sharp
    at = lambda t: dataclasses.replace(stopped, distill=dataclasses.replace(stopped.distill, min_solution_tokens=t))  # noqa: E731
    # Solution tokens include the end-of-turn token, one more than the text's own.
    assert short_yield(at(lengths[1] + 1)) is None  # the two longest remain: one micro-batch
    assert short_yield(at(lengths[1] + 2)) == (
        f"refine kept {len(lengths)} solution(s), but {len(lengths) - 1} of the {len(lengths)} not held out have fewer than "
        f"distill.min_solution_tokens={lengths[1] + 2} solution tokens, leaving 1, fewer than a micro-batch of 2: "
        "too few to train on, so teacher, distill and eval did not run")
    assert json.loads((run / "stats.json").read_text())["refine"]["stopped"]
    result = run_all(at(lengths[1] + 1), backend=backend)
    assert "stopped" not in result and "stopped" not in json.loads((run / "stats.json").read_text())["refine"]
    assert "**Stopped**" not in (run / "report.md").read_text()
    stats = json.loads((run / "stats.json").read_text())["distill"]
    assert (stats["examples"], stats["short_examples_left_out"]) == (2, len(lengths) - 2)


def test_rounds_options(tmp_path):
    with pytest.raises(ConfigError, match="rounds_data=fresh .* set data.limit"):
        load_config(None, {"rounds": 2})
    assert load_config(None, {"rounds": 2, "rounds_data": "same"}).rounds == 2
    with pytest.raises(ConfigError, match=r"rounds: must be >= 1 \(got 0\)"):
        load_config(None, {"rounds": 0})
    args = build_parser().parse_args(["run", "--rounds", "3", "--rounds_data", "same"])
    assert vars(args)["cfg:rounds"] == 3 and vars(args)["cfg:rounds_data"] == "same"


def test_a_report_on_two_iterated_runs_shows_both_and_compares_them_round_by_round(tmp_path):
    """Two made-up iterated runs: each gets its own section and plot, and round r of the first is set against round r of the second."""
    correct = {"ssb": {0: [1, 0, 0, 0, 0, 0], 1: [1, 1, 1, 0, 0, 0], 2: [1, 1, 0, 1, 1, 1]},
               "sft": {0: [1, 0, 0, 0, 0, 0], 1: [1, 0, 0, 0, 1, 0], 2: [0, 1, 0, 0, 1, 0]}}
    runs = {}
    for arm, per_round in correct.items():
        run = runs[arm] = tmp_path / arm
        fake_eval(run, "base", per_round[0])
        fake_eval(run, arm, per_round[1])  # each run's adapter under its objective's name
        fake_eval(run / "round-2", arm, per_round[2])
        write_json_atomic(run / "rounds.json", {"rounds": 2, "rounds_data": "same", "stopped": None,
                                                "per_round": [{"round": 1, "folder": ".", "evaluated": arm},
                                                              {"round": 2, "folder": "round-2", "evaluated": arm}]})
    (tmp_path / "both").mkdir()
    report = "\n".join(rounds_sections([runs["ssb"], runs["sft"]], tmp_path / "both"))
    assert "## Rounds: ssb" in report and "## Rounds: sft" in report
    assert (tmp_path / "both/rounds-ssb.png").stat().st_size > 0 and (tmp_path / "both/rounds-sft.png").stat().st_size > 0
    across = [line for line in report.splitlines() if line.startswith("| round ") and ": ssb - sft |" in line]
    assert [line.split(" | ")[0].strip("| ") for line in across] == ["round 1: ssb - sft", "round 2: ssb - sft"]
    for r, row in zip((1, 2), across):
        diffs = [x - y for x, y in zip(correct["ssb"][r], correct["sft"][r])]
        assert f"| gsm8k | {100 * sum(diffs) / 6:+.1f} | " in row and f"| {diffs.count(1)} / {diffs.count(-1)} (n=6) |" in row
