"""What stages record as their inputs: one mechanism (the stage table's parts, whole config sections), so a new config
field is recorded by every stage that reads its section, and a field added later keeps finished folders finished."""

import dataclasses
from dataclasses import dataclass

import pytest

from ssb.config import SSBConfig, doc, leaf_fields
from ssb.runfolder.artifacts import RunFolderError
from ssb.runfolder.folder import RunFolder, config_part, section_inputs
from ssb.runfolder.stages import STAGES, stage_named


@dataclass
class Inner:
    a: int = doc(1, "kept")
    late: bool = doc(False, "added later", added_later=True)


@dataclass
class Section:
    x: str = doc("x", "kept")
    selects: list[str] = doc(["a"], "selects what runs", stage_input=False)
    late: int = doc(0, "added later", added_later=True)
    inner: Inner = doc(Inner(), "nested")


def test_section_inputs_keep_every_field_but_those_declared_otherwise():
    assert section_inputs(Section()) == {"x": "x", "inner": {"a": 1}}
    changed = Section(late=3, selects=["b"], inner=Inner(late=True))
    assert section_inputs(changed) == {"x": "x", "late": 3, "inner": {"a": 1, "late": True}}


# Config parts no stage records as a section, each with the reason.
NOT_SECTIONS = {
    "run_dir": "where the stages write, not what they compute",
    "progress": "progress bars only",
    "rounds": "ssb.rounds runs the stages once per round, each in its own folder with its own inputs",
    "rounds_data": "recorded per round as its data slice (data.offset)",
    "prompts": "recorded as the prompts' hashes (system_prompt_sha256, hinted_prompt_sha256) or the system prompt itself (eval)",
    "backend": "the generation engine: recorded in every manifest entry (generation_backend), not an input",
}


def test_every_config_field_is_recorded_by_a_stage_or_declared_not_to_be():
    recorded = {part for stage in STAGES for part in stage.records}
    sections = {"lora": "distill"}
    for dotted, field, _ in leaf_fields():
        if not field.metadata.get("stage_input", True):
            continue
        top = dotted.split(".")[0]
        assert top in recorded or sections.get(top) in recorded or top in NOT_SECTIONS, f"{dotted} is recorded by no stage"
    assert set(NOT_SECTIONS) <= {f.name for f in dataclasses.fields(SSBConfig)}


def test_every_stage_that_generates_from_or_trains_the_policy_records_its_prompt_and_grader():
    for name in ("rollouts", "refine", "grpo"):
        assert {"seed", "model", "system_prompt_sha256", "grading"} <= set(stage_named(name).records), name
    assert {"system_prompt", "seed", "grading"} <= set(stage_named("eval").records)


def test_a_stage_records_its_table_entry_and_nothing_else(tmp_path):
    config = SSBConfig(run_dir=str(tmp_path))
    folder = RunFolder(tmp_path)
    rollouts = folder.stage("rollouts", config)
    assert list(rollouts.inputs) == ["seed", "model", "data", "system_prompt_sha256", "rollouts", "grading"]
    assert rollouts.inputs["rollouts"] == config_part(config, "rollouts") == dataclasses.asdict(config.rollouts)
    assert {"answer_first_chars", "prompt_terms"}.isdisjoint(config_part(config, "refine"))  # added later, at their defaults
    with pytest.raises(RunFolderError, match="stage 'refine' needs 'rollouts' to have finished first"):
        folder.stage("refine", config)
    with pytest.raises(ValueError, match="records 'adapter_sha256', which the config does not give and the stage did not supply"):
        folder.stage("merge", config, model={}, adapter="a")
    with pytest.raises(ValueError, match="was given extra, which its table entry does not record"):
        folder.stage("rollouts", config, extra=1)
    evaluation = folder.stage("eval", config, key="base/gsm8k", model={"base": "m"}, benchmark={}, system_prompt="s")
    assert evaluation.name == "eval/base/gsm8k" and evaluation.outputs == ["eval/base/gsm8k.samples.jsonl", "eval/base/gsm8k.summary.json"]
    assert evaluation.inputs["eval"] == {"n": 1, "sampling": dataclasses.asdict(config.eval.sampling), "chunk_questions": 16}
