"""A finished stage's outputs are recorded by size and sha256 and verified wherever they are relied on: by the stage that
reads them, by a skip, and (for an evaluated adapter) by the evaluation that read it; --force STAGE always redoes STAGE."""

import json
from pathlib import Path

import pytest

from helpers import phase1_folder, write_benchmark
from scripted import ScriptedBackend, refine_script, rollout_script  # noqa: I001  (tests/ on the path)
from ssb.config import load_config
from ssb.distillation import run_distill
from ssb.evaluation import run_eval
from ssb.refinement import run_refine
from ssb.rollouts import run_rollouts
from ssb.runfolder.artifacts import RunFolderError, file_digest, read_jsonl
from ssb.teacher_targets import run_teacher


def entry(config, stage: str) -> dict:
    return json.loads((Path(config.run_dir) / "manifest.json").read_text())["stages"][stage]


@pytest.fixture
def phase1(tmp_path, tiny_model_dir):
    return phase1_folder(tmp_path, tiny_model_dir)


def backend(config, script):
    from ssb.chat import ChatFormat
    from ssb.models import load_tokenizer

    return ScriptedBackend(ChatFormat(load_tokenizer(config.model)), script)


def test_finished_stages_record_each_output_by_size_and_sha256(phase1):
    run = Path(phase1.run_dir)
    assert entry(phase1, "rollouts")["outputs"] == {"rollouts.jsonl": file_digest(run / "rollouts.jsonl")}
    assert set(entry(phase1, "refine")["outputs"]) == {"refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl"}
    run_teacher(phase1)
    run_distill(phase1)
    outputs = entry(phase1, "distill")["outputs"]
    assert "distill/metrics.jsonl" in outputs and "distill/adapter/adapter_model.safetensors" in outputs
    assert not any("checkpoints" in name for name in outputs)  # resume state, not an output
    assert set(entry(phase1, "teacher")["outputs"]) == {"teacher/manifest.json", "teacher/targets-00000.safetensors"}


def test_a_torn_or_missing_upstream_output_is_named_not_consumed(phase1):
    """Cutting the tail off rollouts.jsonl used to make refine refine 5 of 6 questions with exit 0."""
    run = Path(phase1.run_dir)
    rollouts = run / "rollouts.jsonl"
    text = rollouts.read_bytes()
    rollouts.write_bytes(text[: len(text) // 2])
    refined_again = load_config(None, {**_overrides(phase1), "refine.sampling.temperature": 0.5})
    with pytest.raises(RunFolderError, match=r"rollouts\.jsonl: has \d+ bytes, not the \d+ it had since stage 'rollouts' wrote it.*--force rollouts"):
        run_refine(refined_again, backend=backend(phase1, refine_script))
    rollouts.unlink()
    with pytest.raises(RunFolderError, match=r"rollouts\.jsonl: is missing since stage 'rollouts' wrote it"):
        run_refine(refined_again, backend=backend(phase1, refine_script))
    rollouts.write_bytes(text)  # put back: trusted again, and refine runs with its new inputs
    run_refine(refined_again, backend=backend(phase1, refine_script), force=True)


def _overrides(config) -> dict:
    return {"run_dir": config.run_dir, "data.source": "jsonl", "data.path": config.data.path, "model.name_or_path": config.model.name_or_path,
            "rollouts.chunk_questions": 8, "progress": False, "backend.name": "hf", "teacher.batch_size": 3}


def test_a_skip_relies_on_the_outputs_and_force_always_redoes(phase1):
    run = Path(phase1.run_dir)
    student = run / "student.jsonl"
    original = student.read_bytes()
    student.write_bytes(original.replace(b"step", b"stop", 1))  # same size, other bytes
    with pytest.raises(RunFolderError, match=r"student\.jsonl: has changed \(sha256 .*since stage 'refine' wrote it.*ssb refine --force"):
        run_refine(phase1, backend=backend(phase1, refine_script))
    with pytest.raises(RunFolderError, match="student.jsonl"):  # and the stage after refine will not read it either
        run_teacher(phase1)
    refiner = backend(phase1, refine_script)
    run_refine(phase1, backend=refiner, force=True)  # the same inputs: forced all the same, so refined again
    assert refiner.calls and student.read_bytes() == original  # seeded: the same views as the first time
    run_teacher(phase1)


def test_overwritten_teacher_targets_are_refused_by_distill(phase1):
    run_teacher(phase1)
    shard = Path(phase1.run_dir) / "teacher" / "targets-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\x00" * 8  # the last values of the last tensor: the file still loads
    shard.write_bytes(bytes(data))
    with pytest.raises(RunFolderError, match=r"targets-00000\.safetensors: has changed .*ssb teacher --force"):
        run_distill(phase1)
    assert not (Path(phase1.run_dir) / "distill").exists()


def test_an_evaluated_adapter_edited_afterwards_is_not_reported_with_the_old_results(phase1, tmp_path):
    run_teacher(phase1)
    run_distill(phase1)
    write_benchmark(tmp_path / "bench", "gsm8k", 2)
    adapter = Path(phase1.run_dir) / "distill" / "adapter"
    config = load_config(None, {**_overrides(phase1), "data.data_dir": str(tmp_path / "bench"), "eval.benchmarks": ["gsm8k"],
                                "eval.adapters": [f"ssb={adapter}"], "eval.skip_base": True, "eval.sampling.max_new_tokens": 3,
                                "model.dtype": "float32"})
    run_eval(config)
    assert run_eval(config) == {"ssb": {"gsm8k": 0.0}}  # skipped: nothing changed
    adapter_config = adapter / "adapter_config.json"
    settings = json.loads(adapter_config.read_text())
    adapter_config.write_text(json.dumps({**settings, "lora_alpha": settings["lora_alpha"] * 4}))
    with pytest.raises(RunFolderError, match=r"adapter_config\.json: has .*since stage 'eval/ssb/gsm8k' read it.*ssb eval --force"):
        run_eval(config)
    run_eval(config, force=True)  # re-evaluated with the edited adapter
    assert read_jsonl(Path(config.run_dir) / "eval" / "ssb" / "gsm8k.samples.jsonl")
    assert entry(config, "eval/ssb/gsm8k")["reads"][str(adapter_config)] == file_digest(adapter_config)


def test_entries_made_before_digests_were_recorded_still_count_as_finished(phase1):
    manifest_path = Path(phase1.run_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for stage in manifest["stages"].values():
        stage.pop("outputs")
    manifest_path.write_text(json.dumps(manifest))
    calls = backend(phase1, rollout_script)
    run_rollouts(phase1, backend=calls)
    assert calls.calls == []  # skipped, as before
