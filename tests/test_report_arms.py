"""ssb report across run folders: pooled seeds, A minus B, Holm, the interval over runs and questions, a declared plan,
training data length, diagnostics.

Run folders are written by hand (graded samples, no model); every expected number is worked out
here from the 0/1 grades, not by the code under test.
"""

import hashlib
import json
import math
import statistics
from pathlib import Path

import pytest

from bootstrap_reference import reference_interval, reference_p, reference_resample
from ssb.cli import main
from ssb.config import load_config
from ssb.evaluation import summarize
from ssb.report import write_report
from ssb.stats.comparison import arm_pass_at_1, compare, holm, model_labels, resolve
from ssb.stats.metrics import Z95

# Per question q0..q5, one list of sample grades per question.
GRADES = {
    "a": {"base": [[1], [0], [0], [0], [1], [0]],
          "sft": [[0], [1], [1], [1], [1], [1]],
          "ssb-s0": [[1], [1], [0], [1], [1], [0]],
          "ssb-s1": [[1], [1], [1], [0], [0], [0]]},
    # ssb-s2 draws two samples per question: its scores are 1, 1/2, 1, 1/2, 1, 0.
    "b": {"base": [[0], [0], [0], [0], [0], [0]],
          "ssb-s2": [[1, 1], [0, 1], [1, 1], [1, 0], [1, 1], [0, 0]]},
}
ARM = "ssb=ssb-s0,ssb-s1,ssb-s2"


def scores_of(grades: list[list[int]]) -> list[float]:
    return [sum(samples) / len(samples) for samples in grades]


# The arm's three runs and the single models, as runs x questions.
SSB_RUNS = [scores_of(GRADES["a"]["ssb-s0"]), scores_of(GRADES["a"]["ssb-s1"]), scores_of(GRADES["b"]["ssb-s2"])]
ONE = {name: [scores_of(GRADES[folder][model])] for name, (folder, model) in
       {"a/base": ("a", "base"), "b/base": ("b", "base"), "sft": ("a", "sft")}.items()}


def runs_cell(a, b=None, resamples=2000, seed=0) -> str:
    """The interval over runs and questions as the report prints it, from the loop of bootstrap_reference."""
    low, high = reference_interval(reference_resample(a, b, resamples, seed))
    return f"[{100 * low:+.1f}, {100 * high:+.1f}]" if b is not None else f"[{100 * low:.1f}, {100 * high:.1f}]"


def write_eval(folder: Path, model: str, grades: list[list[int]], benchmark: str = "gsm8k") -> None:
    records = [{"index": i, "id": f"q{i}", "completions": [
        {"correct": bool(c), "strict_correct": bool(c), "answer": "7" if c else "8", "num_tokens": 10 + c, "finish_reason": "stop",
         "grader_timed_out": False} for c in samples]} for i, samples in enumerate(grades)]
    (folder / "eval" / model).mkdir(parents=True)
    (folder / "eval" / model / f"{benchmark}.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    n = len(grades[0])
    summary = {"model": model, "benchmark": benchmark, **summarize(records, load_config(None, {"eval.n": n, "eval.k": [1]}))}
    (folder / "eval" / model / f"{benchmark}.summary.json").write_text(json.dumps(summary))


@pytest.fixture
def runs(tmp_path):
    for name, models in GRADES.items():
        for model, grades in models.items():
            write_eval(tmp_path / name, model, grades)
    return tmp_path / "a", tmp_path / "b"


def ci_row(diffs: list[float]) -> str:
    mean = sum(diffs) / len(diffs)
    half = Z95 * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{100 * mean:+.1f} | [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"


def z_p(diffs: list[float]) -> str:
    """Two-sided normal test of the mean difference, as the report prints it."""
    z = abs(statistics.mean(diffs)) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
    p = math.erfc(z / math.sqrt(2))
    return ("<0.001" if p < 0.001 else f"{p:.3f}") + " (z)"


def test_pooled_arm_is_the_mean_of_seeds_per_question():
    seeds = {"s0": {"q0": 1.0, "q1": 1.0, "q2": 0.0, "q3": 1.0}, "s1": {"q0": 1.0, "q1": 0.0, "q2": 0.0, "q3": 0.5, "q9": 1.0}}
    r = arm_pass_at_1(seeds, binary=False)
    # q9 was not answered by s0: the arm is scored on q0..q3, whose seed means are 1, 1/2, 0, 3/4.
    assert r["n_questions"] == 4 and r["mean"] == pytest.approx(2.25 / 4)
    half = Z95 * statistics.stdev([1, 0.5, 0, 0.75]) / 2
    assert r["ci95"] == pytest.approx([2.25 / 4 - half, min(1.0, 2.25 / 4 + half)])
    assert r["per_model"] == pytest.approx({"s0": 3 / 4, "s1": 1.5 / 4})


def test_paired_comparison_counts_and_exact_p():
    a = {"q0": 1.0, "q1": 2 / 3, "q2": 1 / 3, "q3": 0.0, "q4": 1.0}
    b = {"q0": 0.0, "q1": 1 / 3, "q2": 1 / 3, "q3": 1.0, "q4": 0.0, "q5": 1.0}
    d = compare(a, b)
    # Sides that average alike (the same samples per model, in any order) keep the sign test; models of
    # 1 and 3 samples against 2 and 2, or three models against one, do not.
    assert compare(a, b, ([1, 1, 1], [1, 1, 1]))["test"] == "sign" and compare(a, b, ([1, 3], [3, 1]))["test"] == "sign"
    assert compare(a, b, ([1, 3], [2, 2]))["test"] == "z" and compare(a, b, ([1, 1, 1], [1]))["test"] == "z"
    # Five shared questions; differences 1, 1/3, 0, -1, 1: three better, one worse, one tie.
    assert (d["n_questions"], d["better"], d["worse"]) == (5, 3, 1)
    assert d["mean"] == pytest.approx((1 + 1 / 3 - 1 + 1) / 5)
    # Sign test on 4 discordant questions: P(X <= 1), X ~ Bin(4, 1/2), is 5/16; two-sided 10/16.
    assert d["p_value"] == pytest.approx(10 / 16)


def test_holm_adjusts_in_order_and_stays_monotone():
    # Sorted: 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06 (never below an earlier one).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.3, 0.02]) == pytest.approx([0.3, 0.04]) and holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_a_name_in_two_folders_is_qualified_and_a_bare_reference_refused():
    labels = model_labels([("runs/a", "base"), ("runs/a", "sft"), ("other/b", "base")])
    assert sorted(labels.values()) == ["a/base", "b/base", "sft"]
    assert resolve("a/sft", labels) == "sft" and resolve("b/base", labels) == "b/base"
    with pytest.raises(ValueError, match=r"model 'base' is evaluated in both runs/a and other/b; name it as a/base or b/base"):
        resolve("base", labels)
    with pytest.raises(ValueError, match="two run folders are both named 'a'"):
        model_labels([("x/a", "m"), ("y/a", "n")])


def test_report_arms_comparisons_and_holm(runs):
    a, b = runs
    text = write_report(a, b, arms=[ARM], comparisons=["ssb:a/base", "ssb:sft"]).read_text()
    assert text.index("## Arms and comparisons") < text.index("| A - B |") < text.index("| arm |") < text.index("## pass@1")
    # The arm's per-question scores: means over the three seeds of q0..q5.
    arm = [1, 5 / 6, 2 / 3, 1 / 2, 2 / 3, 0]
    assert sum(arm) / 6 == pytest.approx(11 / 18)
    half = Z95 * statistics.stdev(arm) / math.sqrt(6)
    assert (f"| ssb | gsm8k | 61.1 | [{100 * (11 / 18 - half):.1f}, {100 * min(1, 11 / 18 + half):.1f}] (n=6) | {runs_cell(SSB_RUNS)} "
            "| ssb-s0 66.7, ssb-s1 50.0, ssb-s2 66.7 |") in text
    assert "| sft | gsm8k | 83.3 | " in text and "(n=6) | —, one run | sft 83.3 |" in text
    # The arm averages 4 samples per question (seeds of 1, 1 and 2), its opponents 1: the z test, not the sign test.
    # ssb - a/base: differences 0, 5/6, 2/3, 1/2, -1/3, 0; 3 better, 1 worse.
    # ssb - sft: differences 1, -1/6, -1/3, -1/2, -1/3, -1; 1 better, 5 worse. Holm over the two.
    to_base, to_sft = [0, 5 / 6, 2 / 3, 1 / 2, -1 / 3, 0], [1, -1 / 6, -1 / 3, -1 / 2, -1 / 3, -1]
    p = {name: math.erfc(abs(statistics.mean(d)) / (statistics.stdev(d) / math.sqrt(6)) / math.sqrt(2))
         for name, d in (("base", to_base), ("sft", to_sft))}
    low, high = sorted(p.values())
    adjusted = {name: max(2 * low, high) if v == high else 2 * low for name, v in p.items()}
    assert (f"| ssb - a/base | gsm8k | {ci_row(to_base)} | {runs_cell(SSB_RUNS, ONE['a/base'])} | 3 / 1 (n=6) | {z_p(to_base)} "
            f"| {adjusted['base']:.3f} |") in text
    assert (f"| ssb - sft | gsm8k | {ci_row(to_sft)} | {runs_cell(SSB_RUNS, ONE['sft'])} | 1 / 5 (n=6) | {z_p(to_sft)} "
            f"| {adjusted['sft']:.3f} |") in text
    assert "| 95% CI (questions) | 95% CI (runs and questions) |" in text and "runs with replacement" in text
    assert "**Multiple comparisons**: 2 comparisons" in text and "sign test" in text
    assert "Difference from the base model" not in text  # named comparisons replace the default family


def test_one_comparison_has_no_holm_column(runs):
    a, _ = runs
    text = write_report(a, comparisons=["sft:base"]).read_text()
    # sft - base with one sample each: McNemar's discordant pairs 4 / 1, exact p = 2 (1 + 5) / 32 = 0.375.
    assert f"| sft - base | gsm8k | {ci_row([-1, 1, 1, 1, 0, 1])} | —, one run each | 4 / 1 (n=6) | 0.375 |\n" in text
    assert "Multiple comparisons" not in text
    # A one-sample single-model arm keeps Wilson's interval, as in its evaluation summary.
    summary = json.loads((a / "eval/sft/gsm8k.summary.json").read_text())["pass@1"]
    assert f"| sft | gsm8k | 83.3 | [{100 * summary['ci95'][0]:.1f}, {100 * summary['ci95'][1]:.1f}] (n=6) | —, one run | sft 83.3 |" in text


def test_default_compares_each_model_with_its_own_folders_base(runs):
    a, b = runs
    text = write_report(a, b).read_text()
    assert "## Arms and comparisons" not in text
    # ssb-s2 (two samples per question) against b's base (one, all wrong): 5 better, 0 worse; the z test.
    assert f"| ssb-s2 | gsm8k | {ci_row([1, 0.5, 1, 0.5, 1, 0])} | 5 / 0 (n=6) | {z_p([1, 0.5, 1, 0.5, 1, 0])} |" in text
    assert "| sft | gsm8k | " in text and "4 / 1 (n=6) | 0.375 |" in text
    assert "**Multiple comparisons**: 4 comparisons" in text and "| Holm p |" in text
    assert "| a/base | " in text and "| b/base | " in text


def test_training_data_length_and_diagnostics(runs, tmp_path):
    a, _ = runs
    for name in ("train-ssb", "train-sft"):
        (tmp_path / name / "distill").mkdir(parents=True)
        (tmp_path / name / "manifest.json").write_text(json.dumps({"stages": {}}))
    (tmp_path / "train-ssb/stats.json").write_text(json.dumps({"distill": {"steps": 5, "mean_solution_tokens": 123.4}}))
    student = [{"id": i, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                      {"role": "assistant", "content": "x" * length}]} for i, length in enumerate((10, 20))]
    (tmp_path / "train-sft/student.jsonl").write_text("".join(json.dumps(r) + "\n" for r in student))
    steps = [{"step": s, "loss": 1.0, "teacher_entropy": float(s), "top1_agreement": 0.1 * s} for s in range(1, 6)]
    for s in (2, 4):
        steps[s - 1]["heldout_kd"] = 10.0 * s
    (tmp_path / "train-ssb/distill/metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in steps))
    stages = {f"eval/{m}/gsm8k": {"command": "ssb eval", "model_spec": {"adapter": str(tmp_path / folder / "distill/adapter")}}
              for m, folder in (("ssb-s0", "train-ssb"), ("sft", "train-sft"))}
    (a / "manifest.json").write_text(json.dumps({"stages": {"eval/base/gsm8k": {"model_spec": {"adapter": None}}, **stages}}))
    text = write_report(a).read_text()
    assert "| mean tokens | training solution length |" in text
    assert text.count(" | 123 tokens |") == 1 and text.count(" | 15 chars |") == 1  # (10 + 20) / 2 characters
    assert "| base | gsm8k |" in text and "| 10 | - |" in text
    # Steps 1..5: first 3 mean (1+2+3)/3 = 2, last 3 mean (3+4+5)/3 = 4; heldout_kd only at steps 2 and 4: 30 both ways.
    assert "| model | steps | teacher_entropy | top1_agreement | heldout_kd |" in text
    assert "| ssb-s0 | 5 | 2 -> 4 | 0.2 -> 0.4 | 30 -> 30 |" in text
    assert "student_entropy" not in text and "kd_share_eot" not in text


def test_cli_writes_to_out_and_refuses_an_ambiguous_model(runs, tmp_path, capsys):
    a, b = runs
    out = tmp_path / "out"
    code = main(["report", str(a), str(b), "--arm", ARM, "--compare", "ssb:base", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"model 'base' is evaluated in both {a} and {b}; name it as a/base or b/base" in err and "Traceback" not in err
    assert not out.exists() and not (a / "report.md").exists()
    assert main(["report", str(a), str(b), "--arm", ARM, "--compare", "ssb:b/base", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    text = (out / "report.md").read_text()
    assert text.startswith("# SSB report: a, b") and not (a / "report.md").exists() and (out / "accuracy.png").exists()
    # ssb - b/base: differences 1, 5/6, 2/3, 1/2, 2/3, 0: five better, none worse (4 samples against 1: the z test).
    diffs = [1, 5 / 6, 2 / 3, 1 / 2, 2 / 3, 0]
    assert f"| ssb - b/base | gsm8k | {ci_row(diffs)} | {runs_cell(SSB_RUNS, ONE['b/base'])} | 5 / 0 (n=6) | {z_p(diffs)} |" in text
    assert main(["report", str(a), "--compare", "ssb-s0:nothing"]) == 2
    assert "no evaluated model 'nothing'" in capsys.readouterr().err


def test_resumed_generating_stage_is_costed_at_its_measured_rate(runs):
    a, _ = runs
    # Rollouts resumed: the last invocation made 300 of 1200 tokens in 30 s (10 tok/s), so the stage's
    # 1200 tokens cost about 120 s. Refine ran once: its own 50 s. Distill has no tokens: its 70 s.
    stats = {"rollouts": {"generated_tokens": 1200, "this_invocation": {"wall_s": 30.0, "generated_tokens": 300, "tokens_per_s": 10.0}},
             "refine": {"questions": 4, "mixed": 3, "kept": 2, "generated_tokens": 400,
                        "this_invocation": {"wall_s": 50.0, "generated_tokens": 400, "tokens_per_s": 8.0}},
             "distill": {"steps": 6, "this_invocation": {"wall_s": 70.0}}}
    (a / "stats.json").write_text(json.dumps(stats))
    text = write_report(a).read_text()
    compute = text.split("## Compute", 1)[1]
    assert "| rollouts | 1200 |  | ≈120.0 |" in compute
    assert "| refine | 400 |  | 50.0 |" in compute
    assert "| distill |  | 6 | 70.0 |" in compute


def test_a_folder_that_only_evaluated_has_no_compute_table(runs):
    a, _ = runs
    (a / "stats.json").write_text(json.dumps({"eval/base/gsm8k": {"this_invocation": {"wall_s": 5.0}}}))
    assert "## Compute" not in write_report(a).read_text()


def test_a_small_run_says_first_that_it_checks_the_pipeline_and_is_not_evidence(tmp_path):
    small = tmp_path / "small"
    write_eval(small, "base", [[1], [0], [0]])
    write_eval(small, "ssb", [[1], [1], [1]])
    (small / "stats.json").write_text(json.dumps({"distill": {"steps": 3}}))
    lines = write_report(small).read_text().splitlines()
    assert lines[2].startswith("**A small run**: at most 3 questions per evaluation after 3 optimiser steps. It checks that the pipeline runs")
    large = tmp_path / "large"
    write_eval(large, "base", [[i % 2] for i in range(100)])
    write_eval(large, "ssb", [[i % 3 == 0] for i in range(100)])
    (large / "stats.json").write_text(json.dumps({"distill": {"steps": 96}}))
    assert "small run" not in write_report(large).read_text()
    (large / "stats.json").write_text(json.dumps({"distill": {"steps": 3}}))  # 100 questions, but hardly trained
    assert "after 3 optimiser steps" in write_report(large).read_text()


def test_a_report_interrupted_while_writing_leaves_the_previous_files_whole(runs, monkeypatch):
    """ssb report writes into a run folder another process may be using: a plot or report cut off half-way (a full disk,
    a kill) must never stand under the final name."""
    from matplotlib.figure import Figure

    first, _ = runs
    write_report(first)
    before = {name: (first / name).read_bytes() for name in ("report.md", "accuracy.png")}

    def torn(self, path, **kwargs):
        Path(path).write_bytes(b"half a png")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", torn)
    with pytest.raises(OSError):
        write_report(first)
    assert {name: (first / name).read_bytes() for name in before} == before


PLAN = """arms:
  ssb: [ssb-s0, ssb-s1, ssb-s2]
  sft: [sft]
  base-a: [a/base]
  base-b: [b/base]
primary: ["ssb:sft", "sft:base-a"]
secondary: ["ssb:base-a", "ssb:base-b"]
"""


def plan_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


def reference_holm(p_values: list[float]) -> list[float]:
    """Holm by its definition: the i-th smallest p times (m - i), never below the one before, at most 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = {}, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return [adjusted[i] for i in range(len(p_values))]


def test_a_plan_applies_its_sign_test_to_every_comparison_and_holm_per_family(runs, tmp_path):
    a, b = runs
    plan = plan_file(tmp_path, PLAN + "test: sign\n")
    text = write_report(a, b, plan=plan).read_text()
    sha = hashlib.sha256(plan.read_bytes()).hexdigest()
    assert f"Plan: `{plan}`, sha256 `{sha}`. Applied as declared: the sign test for every comparison" in text
    assert text.index(f"### Primary (declared in {plan})") < text.index(f"### Secondary, exploratory (declared in {plan})") < text.index("| arm |")
    # Sign tests, by counting: ssb - sft 1 better / 5 worse, 2 (1 + 6) / 64; sft - base-a 4 / 1, 2 (1 + 5) / 32;
    # ssb - base-a 3 / 1, 2 (1 + 4) / 16; ssb - base-b 5 / 0, 2 / 32. The arm against one model keeps the sign test
    # (as declared) where --compare would have switched to z.
    primary = reference_holm([14 / 64, 12 / 32])
    secondary = reference_holm([10 / 16, 2 / 32])  # over the secondary two only: over all four the smallest would be 4 x 2/32
    to_sft, to_base_a = [1, -1 / 6, -1 / 3, -1 / 2, -1 / 3, -1], [0, 5 / 6, 2 / 3, 1 / 2, -1 / 3, 0]
    to_base_b = [1, 5 / 6, 2 / 3, 1 / 2, 2 / 3, 0]
    assert f"| ssb - sft | gsm8k | {ci_row(to_sft)} | {runs_cell(SSB_RUNS, ONE['sft'])} | 1 / 5 (n=6) | 0.219 | {primary[0]:.3f} |" in text
    assert f"| sft - base-a | gsm8k | {ci_row([-1, 1, 1, 1, 0, 1])} | —, one run each | 4 / 1 (n=6) | 0.375 | {primary[1]:.3f} |" in text
    assert f"| ssb - base-a | gsm8k | {ci_row(to_base_a)} | {runs_cell(SSB_RUNS, ONE['a/base'])} | 3 / 1 (n=6) | 0.625 | {secondary[0]:.3f} |" in text
    assert f"| ssb - base-b | gsm8k | {ci_row(to_base_b)} | {runs_cell(SSB_RUNS, ONE['b/base'])} | 5 / 0 (n=6) | 0.062 | {secondary[1]:.3f} |" in text
    assert "| p (sign) | Holm p |" in text and " (z)" not in text
    assert "**By the plan's rule** (Holm p over the 2 primary rows below alpha = 0.05): none is significant." in text
    assert "sign test is biased towards the side that averages more samples per question (three seeds against one model) in: " \
           "ssb - sft (gsm8k), ssb - base-a (gsm8k), ssb - base-b (gsm8k);" in text
    assert "Difference from the base model" not in text


def test_a_bootstrap_plan_gives_every_comparison_the_two_level_p(runs, tmp_path):
    a, b = runs
    plan = plan_file(tmp_path, PLAN.replace("secondary", "# secondary") + "test: bootstrap\nalpha: 0.1\nbootstrap: {resamples: 500, seed: 3}\n")
    text = write_report(a, b, plan=plan).read_text()
    sides = {"ssb - sft": (SSB_RUNS, ONE["sft"]), "sft - base-a": (ONE["sft"], ONE["a/base"])}
    p = {name: reference_p(reference_resample(*pair, resamples=500, seed=3)) for name, pair in sides.items()}
    adjusted = dict(zip(p, reference_holm(list(p.values()))))
    # The questions' interval and counts stay those of the pooled scores; p is the bootstrap's, for single models too.
    assert (f"| ssb - sft | gsm8k | {ci_row([1, -1 / 6, -1 / 3, -1 / 2, -1 / 3, -1])} | {runs_cell(*sides['ssb - sft'], 500, 3)} "
            f"| 1 / 5 (n=6) | {p['ssb - sft']:.3f} | {adjusted['ssb - sft']:.3f} |") in text
    assert (f"| sft - base-a | gsm8k | {ci_row([-1, 1, 1, 1, 0, 1])} | —, one run each | 4 / 1 (n=6) "
            f"| {p['sft - base-a']:.3f} | {adjusted['sft - base-a']:.3f} |") in text
    assert "| p (bootstrap) | Holm p |" in text and "### Secondary" not in text and "sign test is biased" not in text
    significant = [f"{name} (gsm8k)" for name, v in adjusted.items() if v < 0.1]
    assert f"below alpha = 0.1): {'significant: ' + ', '.join(significant) if significant else 'none is significant'}." in text
    assert "| ssb | gsm8k | 61.1 | " in text and f"(n=6) | {runs_cell(SSB_RUNS, resamples=500, seed=3)} | ssb-s0 66.7" in text
    assert "| base-b | gsm8k | 0.0 | " in text  # declared arms of one model are listed under their arm's name


def test_a_plan_naming_what_was_not_evaluated_is_refused_before_anything_is_written(runs, tmp_path):
    a, b = runs
    for change, message in [(("ssb-s2]", "nothing]"), "arms.ssb: no evaluated model 'nothing'"),
                            (("[a/base]", "[base]"), "arms.base-a: model 'base' is evaluated in both"),
                            (("secondary", "benchmarks: [math500]\nsecondary"), "benchmarks: 'math500' is not evaluated for ssb-s0, ssb-s1, ssb-s2")]:
        plan = plan_file(tmp_path, PLAN.replace(*change) + "test: z\n")
        with pytest.raises(ValueError) as error:
            write_report(a, b, plan=plan, out=tmp_path / "out")
        assert str(error.value).startswith(f"{plan}: ") and message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_cli_plan_is_instead_of_arm_and_compare(runs, tmp_path, capsys):
    a, b = runs
    plan = plan_file(tmp_path, PLAN + "test: z\n")
    assert main(["report", str(a), str(b), "--plan", str(plan), "--arm", ARM, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"ssb report: error: --plan {plan} declares the arms and comparisons; give it without --arm and --compare" in err
    plan.write_text(PLAN + "test: t\n")
    assert main(["report", str(a), str(b), "--plan", str(plan)]) == 2
    assert f"ssb report: error: {plan}: test: unknown test 't'" in capsys.readouterr().err
    plan.write_text(PLAN + "test: z\n")
    assert main(["report", str(a), str(b), "--plan", str(plan), "--out", str(tmp_path / "out")]) == 0
    assert "| p (z) | Holm p |" in (tmp_path / "out/report.md").read_text()


def test_the_plots_draw_the_numbers_the_tables_print(runs, tmp_path, monkeypatch):
    """What write_report hands the plots: the arm table's pooled pass@1 and interval with each seed's value, the pass@1
    table's value for a model in no arm, and the comparison tables' rows, primary first."""
    import ssb.report

    drawn = {}

    def capture(name):
        real = getattr(ssb.report, name)

        def draw(data, *rest):
            drawn[name] = data
            real(data, *rest)
        return draw

    for name in ("plot_accuracy", "plot_comparisons"):
        monkeypatch.setattr(ssb.report, name, capture(name))
    a, b = runs
    plan = plan_file(tmp_path, PLAN.replace("base-b: [b/base]", "# base-b").replace(', "ssb:base-b"', "") + "test: z\n")
    text = write_report(a, b, plan=plan, out=tmp_path / "out").read_text()
    assert (tmp_path / "out/comparisons.png").stat().st_size > 0 and (tmp_path / "out/accuracy.png").stat().st_size > 0
    assert text.index("### Secondary") < text.index("](comparisons.png)") < text.index("| arm |")
    bars = {bar.arm: bar for bar in drawn["plot_accuracy"]}
    assert list(bars) == ["ssb", "sft", "base-a", "b/base"]  # the plan's arms in its order, then the model in none
    ssb_bar = bars["ssb"]
    assert f"| ssb | gsm8k | {ssb_bar.mean:.1f} | " in text and f"| {runs_cell(SSB_RUNS)} | ssb-s0 66.7, ssb-s1 50.0, ssb-s2 66.7 |" in text
    assert runs_cell(SSB_RUNS) == f"[{ssb_bar.ci[0]:.1f}, {ssb_bar.ci[1]:.1f}]" and ssb_bar.over_runs
    assert ssb_bar.models == pytest.approx({"ssb-s0": 100 * 4 / 6, "ssb-s1": 50.0, "ssb-s2": 100 * 4 / 6})
    base_b = bars["b/base"]
    assert f"| b/base | {base_b.mean:.1f} ± {(base_b.ci[1] - base_b.ci[0]) / 2:.1f} (n=6) |" in text and not base_b.over_runs
    rows = drawn["plot_comparisons"]
    assert [(r.family, r.name) for r in rows] == [("Primary", "ssb - sft"), ("Primary", "sft - base-a"),
                                                  ("Secondary, exploratory", "ssb - base-a")]
    for r in rows:
        runs_text = "—, one run each" if r.ci_runs is None else f"[{r.ci_runs[0]:+.1f}, {r.ci_runs[1]:+.1f}]"
        assert f"| {r.name} | gsm8k | {r.mean:+.1f} | [{r.ci[0]:+.1f}, {r.ci[1]:+.1f}] | {runs_text} | " in text
    assert rows[1].ci_runs is None and rows[0].ci_runs is not None


def with_engine(folder: Path, model: str, engine: dict) -> None:
    path = folder / "eval" / model / "gsm8k.summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "engine": engine}))


def test_evaluations_on_different_engines_are_named_at_the_top(runs):
    a, b = runs
    amd = {"backend": {"name": "openvino", "weight_format": "int8", "inference_precision": "bf16"}, "device": "cpu",
           "cpu": {"model": "AMD EPYC", "kernel_flags": ["avx2", "avx512_bf16", "avx512f"]}}
    for model in GRADES["a"]:
        with_engine(a, model, amd)
    assert "different engines" not in write_report(a).read_text()  # one engine throughout
    with_engine(b, "base", {**amd, "backend": {**amd["backend"], "kv_cache_gb": 2}, "cpu": {**amd["cpu"], "model": "AMD EPYC 9R14"}})
    assert "different engines" not in write_report(a, b).read_text()  # same numerics; b/ssb-s2 records none: nothing known to differ
    xeon = {**amd, "cpu": {"model": "Intel Xeon", "kernel_flags": ["amx_bf16", "avx2", "avx512_bf16", "avx512f"]}}
    with_engine(b, "ssb-s2", xeon)
    lines = write_report(a, b).read_text().splitlines()
    note = next(line for line in lines if line.startswith("**Evaluated on different engines**"))
    assert ("a/base/gsm8k, b/base/gsm8k, sft/gsm8k, ssb-s0/gsm8k, ssb-s1/gsm8k: openvino int8 bf16 on cpu, AMD EPYC (avx512_bf16); "
            "ssb-s2/gsm8k: openvino int8 bf16 on cpu, Intel Xeon (amx_bf16).") in note


AMD = {"backend": {"name": "openvino", "weight_format": "int8", "inference_precision": "bf16"}, "device": "cpu",
       "cpu": {"model": "AMD EPYC", "kernel_flags": ["avx2", "avx512_bf16", "avx512f"]}}
XEON = {**AMD, "cpu": {"model": "Intel Xeon", "kernel_flags": ["amx_bf16", "avx2", "avx512_bf16", "avx512f"]}}
ANCHORED_PLAN = PLAN.replace('["ssb:base-a", "ssb:base-b"]', '["base-b:base-a"]') + "test: z\nengine_anchors: [a/base, b/base]\n"


def test_comparisons_across_engines_are_repeated_anchored_on_each_engines_base(runs, tmp_path):
    a, b = runs
    for model in GRADES["a"]:
        with_engine(a, model, AMD)
    for model in GRADES["b"]:
        with_engine(b, model, XEON)
    text = write_report(a, b, plan=plan_file(tmp_path, ANCHORED_PLAN)).read_text()
    base_a, base_b = scores_of(GRADES["a"]["base"]), scores_of(GRADES["b"]["base"])
    minus = lambda run, anchor: [s - t for s, t in zip(run, anchor)]  # noqa: E731
    ssb_runs = [minus(SSB_RUNS[0], base_a), minus(SSB_RUNS[1], base_a), minus(SSB_RUNS[2], base_b)]  # ssb-s2 graded on the Xeon
    sft = [minus(ONE["sft"][0], base_a)]
    diffs = [sum(run[q] for run in ssb_runs) / 3 - sft[0][q] for q in range(6)]
    better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    section = text[text.index("### Primary, engine-anchored"):]
    assert (f"| ssb - sft | gsm8k | {ci_row(diffs)} | {runs_cell(ssb_runs, sft)} | {better} / {worse} (n=6) | {z_p(diffs).removesuffix(' (z)')} |"
            in section.splitlines())
    assert "sft - base-a" not in section and "base-b - base-a" not in section  # one engine; anchors alone
    assert "### Secondary, engine-anchored" not in text and "| base-b - base-a | gsm8k | " in text
    assert section.index("**Engine-anchored, by the plan's rule** (Holm p over the 1 primary row below alpha = 0.05)") \
        < section.index("**By the plan's rule, across engines**") < section.index("Engine-anchored: the comparisons above")
    assert "no `engine_anchors`" not in text
    # The plain primary row is still there and differs: b's base scored 0 everywhere, a's did not.
    plain = [sum(run[q] for run in SSB_RUNS) / 3 - ONE["sft"][0][q] for q in range(6)]
    assert f"| ssb - sft | gsm8k | {ci_row(plain)} | " in text and plain != diffs


def test_a_model_on_an_engine_without_an_anchor_is_refused(runs, tmp_path):
    a, b = runs
    with_engine(b, "ssb-s2", XEON)
    for anchors, message in [("[a/base]", "no anchor was graded on gsm8k by the engine that graded ssb-s2 (engine "),
                             ("[a/base, b/base]", "a/base and b/base were both graded on gsm8k by one engine; an engine has one anchor"),
                             ("[a/base, nothing]", "engine_anchors: no evaluated model 'nothing'")]:
        plan = plan_file(tmp_path, ANCHORED_PLAN.replace("[a/base, b/base]", anchors))
        with pytest.raises(ValueError) as error:
            write_report(a, b, plan=plan, out=tmp_path / "out")
        assert str(error.value).startswith(f"{plan}: engine_anchors: ") and message in str(error.value)
    assert not (tmp_path / "out").exists()
    with_engine(b, "base", XEON)  # now b's base anchors the Xeon; the other models record no engine and share a's base
    assert "### Primary, engine-anchored" in write_report(a, b, plan=plan_file(tmp_path, ANCHORED_PLAN)).read_text()


def test_across_engines_a_repeated_primary_comparison_counts_only_where_plain_and_anchored_agree():
    from ssb.report.arms import across_engines

    def row(name, p, mean):
        return (name, "gsm8k", {"p_value": p, "mean": mean})

    sure = 1e-6  # small enough to stay below alpha after Holm over five rows
    plain = [row("both", sure, 0.1), row("plain only", sure, 0.1), row("one engine", sure, -0.1), row("anchored only", 0.5, 0.0),
             row("signs differ", sure, 0.1)]
    anchored_rows = [row("both", sure, 0.2), row("plain only", 0.5, 0.05), row("anchored only", sure, 0.1), row("signs differ", sure, -0.1)]
    assert across_engines(plain, anchored_rows, 0.05).endswith(
        "established: both (gsm8k), one engine (gsm8k); not robust to the engine: plain only (gsm8k), anchored only (gsm8k), "
        "signs differ (gsm8k).")
    # Holm within each family: three anchored rows at p 0.02 are each 0.06 after it, so none stands anchored.
    assert across_engines([row("a", sure, 0.1)], [row("a", 0.02, 0.1), row("b", 0.02, 0.1), row("c", 0.02, 0.1)], 0.05).endswith(
        "none is established; not robust to the engine: a (gsm8k).")


def test_an_anchor_without_every_question_of_its_models_is_refused(runs, tmp_path):
    a, b = runs
    write_eval(tmp_path / "c", "base", GRADES["b"]["base"][:5])  # graded on five of the six questions
    with_engine(b, "ssb-s2", XEON)
    with_engine(tmp_path / "c", "base", XEON)
    plan = plan_file(tmp_path, ANCHORED_PLAN.replace("[a/base, b/base]", "[a/base, c/base]"))
    with pytest.raises(ValueError) as error:
        write_report(a, b, tmp_path / "c", plan=plan, out=tmp_path / "out")
    assert str(error.value) == (f"{plan}: engine_anchors: c/base, the anchor of ssb-s2 on gsm8k, was not graded on 1 of its 6 questions "
                                "(e.g. q5); an anchor is graded on every question its models were")


def test_a_plan_without_anchors_says_when_its_models_were_graded_on_several_engines(runs, tmp_path):
    a, b = runs
    plan = plan_file(tmp_path, ANCHORED_PLAN.replace("engine_anchors: [a/base, b/base]\n", ""))
    assert "no `engine_anchors`" not in write_report(a, b, plan=plan).read_text()  # nothing recorded: one engine as far as known
    with_engine(b, "ssb-s2", XEON)
    assert ("The compared models were graded on 2 engines (or some record none) and this plan names no `engine_anchors`"
            in write_report(a, b, plan=plan).read_text())


def test_the_compute_of_a_trl_arm_counts_every_invocation_and_marks_a_lower_bound():
    """An arm trained by TRL gives its wall-clock over every invocation (training_wall_s); resumed from a checkpoint that
    recorded no time, only its last invocation's is known, and the compute section says it is a lower bound."""
    from ssb.report import compute_section, stage_compute

    whole = {"steps": 90, "generated_tokens": 1000, "this_invocation": {"wall_s": 1731.0}, "training_wall_s": 4004.5, "resumed_from_step": 50}
    assert stage_compute("onpolicy", whole) == (1000, 90, 4004.5)
    partial = {**whole, "training_wall_s": None}
    assert stage_compute("onpolicy", partial) == (1000, 90, 1731.0)
    rows = {line.split(" | ")[0]: line for line in compute_section({"onpolicy": partial, "grpo": {**whole, "resumed_from_step": None}})}
    assert rows["| onpolicy"].endswith("| ≥1731.0 |") and rows["| grpo"].endswith("| 4004.5 |")
