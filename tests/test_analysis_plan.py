"""Declared analysis plans (``ssb report --plan``): what a valid plan reads as, and the error each mistake gets, naming
the file and the field."""

import hashlib
from pathlib import Path

import pytest

from ssb.stats.analysis_plan import PlanError, load_plan

STUDY = Path(__file__).resolve().parents[1] / "studies" / "evidence"
VALID = """arms:
  ssb: [ssb-s0, ssb-s1]
  sft: [sft]
  base: [base]
primary: ["ssb:sft", "ssb:base"]
test: sign
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


def test_a_valid_plan_and_its_defaults(tmp_path):
    path = write(tmp_path, VALID)
    plan = load_plan(path)
    assert plan.arms == {"ssb": ["ssb-s0", "ssb-s1"], "sft": ["sft"], "base": ["base"]}
    assert plan.primary == [("ssb", "sft"), ("ssb", "base")] and plan.secondary == []
    assert (plan.test, plan.alpha, plan.resamples, plan.seed, plan.benchmarks) == ("sign", 0.05, 2000, 0, None)
    assert plan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    plan = load_plan(write(tmp_path, VALID + "secondary: ['sft:base']\nalpha: 0.01\nbootstrap: {resamples: 500, seed: 3}\nbenchmarks: [gsm8k]\n"))
    assert (plan.secondary, plan.alpha, plan.resamples, plan.seed, plan.benchmarks) == ([("sft", "base")], 0.01, 500, 3, ["gsm8k"])
    assert plan.engine_anchors == ()
    assert load_plan(write(tmp_path, VALID + "engine_anchors: [base, base-amx]\n")).engine_anchors == ("base", "base-amx")


@pytest.mark.parametrize("change, message", [
    (("ssb:base", "ssb:nothing"), "primary: 'ssb:nothing': unknown arm 'nothing' (declared: ssb, sft, base)"),
    (("test: sign", "test: t"), "test: unknown test 't' (one of sign, z, bootstrap)"),
    (("test: sign", ""), "test: missing"),
    (("test: sign", "test: sign\ntests: z"), "unknown field tests"),
    (("test: sign", "test: sign\nalpha: 1.5"), "alpha: expected a number between 0 and 1, got 1.5"),
    (("test: sign", "test: sign\nbootstrap: {resamples: 10}"), "bootstrap.resamples: expected an integer >= 100, got 10"),
    (("test: sign", "test: sign\nbootstrap: {resample: 1000}"), "bootstrap: expected a mapping with resamples and seed only"),
    (("sft: [sft]", "sft: [sft, ssb-s1]"), "arms.sft: model 'ssb-s1' is already in arm 'ssb'"),
    (("sft: [sft]", "sft: []"), "arms.sft: expected a non-empty list of names"),
    (("\"ssb:base\"]", "\"ssb:base\", \"sft:ssb\"]"), "primary: 'sft:ssb' is declared twice (or both ways)"),
    (("\"ssb:base\"]", "\"ssb:ssb\"]"), "primary: 'ssb:ssb': an arm compared with itself"),
    (("\"ssb:base\"]", "\"ssb-base\"]"), "primary: 'ssb-base': expected 'A:B'"),
    (("test: sign", "test: sign\nsecondary: ['base:ssb']"), "secondary: 'base:ssb' is declared twice (or both ways)"),
    (("test: sign", "test: sign\ntest: z"), "'test' is given twice"),
    (("test: sign", "test: sign\nengine_anchors: [base, base]"), "engine_anchors: a model is listed twice"),
    (("test: sign", "test: sign\nengine_anchors: base"), "engine_anchors: expected a non-empty list of names"),
])
def test_each_mistake_is_named_with_the_file_and_the_field(tmp_path, change, message):
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(PlanError) as error:
        load_plan(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_a_missing_or_malformed_file(tmp_path):
    with pytest.raises(PlanError, match="plan.yaml: analysis plan not found"):
        load_plan(tmp_path / "plan.yaml")
    with pytest.raises(PlanError, match="plan.yaml: the top level must be a mapping"):
        load_plan(write(tmp_path, "- ssb:sft\n"))


def test_the_evidence_study_declares_its_questions_as_the_primary_family():
    plan = load_plan(STUDY / "plan.yaml")
    assert plan.primary == [("ssb", "sft"), ("ssb", "grpo"), ("ssb", "random-teacher-hint"), ("ssb", "base")]
    assert plan.test == "bootstrap" and plan.benchmarks == ["gsm8k"]
    assert plan.arms["ssb"] == ["ssb", "ssb-s1", "ssb-s2"] and plan.arms["sft-min32"] == ["sft-min32", "sft-min32-s1", "sft-min32-s2"]
    # Every declared model is a committed arm of the study, and the plan says it was written after the runs.
    assert all((STUDY / "results" / model / "gsm8k.samples.jsonl.gz").exists() for models in plan.arms.values() for model in models)
    assert "RETROSPECTIVE" in (STUDY / "plan.yaml").read_text()
