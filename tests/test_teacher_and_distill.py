"""Teacher targets and distillation on a tiny random Qwen2 model, from a scripted phase-1 run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import DISTILL, phase1_folder
from scripted import possible_hinted_prompts
from ssb.alignment import align_examples, pack, solution_hidden_states, solution_token_ids
from ssb.chat import ChatFormat, messages
from ssb.config import ConfigError, load_config
from ssb.distillation import run_distill
from ssb.models import load_model, load_tokenizer
from ssb.runfolder.artifacts import RunFolderError, read_jsonl
from ssb.teacher_targets import run_teacher
from tiny import save_tiny_model


@pytest.fixture
def config(tmp_path, tiny_model_dir):
    return phase1_folder(tmp_path, tiny_model_dir)


def test_views_share_solution_ids_ending_in_end_of_turn(config):
    run = Path(config.run_dir)
    chat = ChatFormat(load_tokenizer(config.model))
    examples = align_examples(run / "teacher.jsonl", run / "student.jsonl", chat)
    assert len(examples) == 10
    teacher, student = read_jsonl(run / "teacher.jsonl"), read_jsonl(run / "student.jsonl")
    for e, t, s in zip(examples, teacher, student):
        assert e.solution_ids == solution_token_ids(chat, t["messages"][2]["content"]) == solution_token_ids(chat, s["messages"][2]["content"])
        assert e.solution_ids[-1] == chat.end_of_turn_id
        assert e.teacher_prompt_ids == chat.prompt_ids(t["messages"][:2]) and e.student_prompt_ids == chat.prompt_ids(s["messages"][:2])
        # The full teacher conversation, rendered by the template, is exactly prompt + solution ids.
        full = chat.tokenizer.apply_chat_template(t["messages"], tokenize=False)
        rendered = chat.tokenizer(full, add_special_tokens=False)["input_ids"]
        assert rendered[: len(e.teacher_prompt_ids) + len(e.solution_ids)] == e.teacher_prompt_ids + e.solution_ids


def test_real_qwen_tokenizer_alignment(qwen_tokenizer):
    chat = ChatFormat(qwen_tokenizer)
    solution = "Step 1: 3 + 4 = 7.\n\nSo the answer is \\boxed{7}."
    ids = solution_token_ids(chat, solution)
    assert qwen_tokenizer.convert_ids_to_tokens(ids[-1]) == "<|im_end|>"
    conversation = messages("S", "What is 3+4?", solution)
    rendered = qwen_tokenizer(qwen_tokenizer.apply_chat_template(conversation, tokenize=False), add_special_tokens=False)["input_ids"]
    prompt = chat.prompt_ids(conversation[:2])
    assert rendered[: len(prompt) + len(ids)] == prompt + ids


def test_batched_forward_equals_token_by_token_loop(config):
    run = Path(config.run_dir)
    model = load_model(config.model)
    chat = ChatFormat(load_tokenizer(config.model))
    examples = align_examples(run / "teacher.jsonl", run / "student.jsonl", chat)[:3]
    batch = pack([e.teacher_prompt_ids for e in examples], [e.solution_ids for e in examples], chat.pad_id)
    with torch.no_grad():
        batched = model.get_output_embeddings()(solution_hidden_states(model, batch))
        loop = []
        for e in examples:  # the paper's Algorithm 1, lines 33-35
            for j in range(len(e.solution_ids)):
                loop.append(model(torch.tensor([e.teacher_prompt_ids + e.solution_ids[:j]])).logits[0, -1])
    assert batched.shape == (sum(len(e.solution_ids) for e in examples), model.config.vocab_size)
    assert (batched - torch.stack(loop)).abs().max().item() < 1e-4


def test_target_formats_agree_and_hidden_reproduces_full_logits(tmp_path, tiny_model_dir):
    stored = {}
    for fmt in ("full", "hidden", "topk"):
        config = phase1_folder(tmp_path, tiny_model_dir, run=f"run-{fmt}",
                               **{"teacher.format": fmt, "teacher.dtype": "float32", "teacher.k": 5, "model.dtype": "float32"})
        stats = run_teacher(config)
        folder = Path(config.run_dir) / "teacher"
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["format"] == fmt and len(manifest["examples"]) == 10 == stats["examples"]
        stored[fmt] = {k: torch.cat([load_file(p)[k] for p in sorted(folder.glob("targets-*.safetensors"))])
                       for k in load_file(next(folder.glob("targets-*.safetensors")))}
    head = load_model(config.model).get_output_embeddings()
    with torch.no_grad():
        from_hidden = head(stored["hidden"]["hidden"])
    torch.testing.assert_close(from_hidden, stored["full"]["logits"], atol=1e-5, rtol=1e-5)
    values, ids = stored["full"]["logits"].topk(5, -1)
    torch.testing.assert_close(stored["topk"]["topk_logits"], values, atol=1e-5, rtol=1e-5)
    assert torch.equal(stored["topk"]["topk_ids"].long(), ids)
    torch.testing.assert_close(stored["topk"]["log_normalizer"], torch.logsumexp(stored["full"]["logits"] / 2.0, -1), atol=1e-5, rtol=1e-5)
    assert torch.equal(stored["full"]["solution_ids"], stored["hidden"]["solution_ids"])


def adapter(run_dir) -> dict:
    return load_file(Path(run_dir) / "distill" / "adapter" / "adapter_model.safetensors")


def test_distill_changes_lora_only_and_writes_outputs(config):
    run_teacher(config)
    base_before = load_file(Path(config.model.name_or_path) / "model.safetensors")
    stats = run_distill(config)
    out = Path(config.run_dir) / "distill"
    assert stats["steps"] == 10  # 10 examples / batch 2 x 2 epochs
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 11))
    assert {"loss", "kl", "ce", "grad_norm", "lr", "solution_tokens", "tokens_per_s"} <= set(metrics[0])
    assert all(m["loss"] >= 0 and m["solution_tokens"] > 0 for m in metrics)
    weights = adapter(config.run_dir)
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: it moved
    assert {k.split(".")[-3] for k in weights if "lora_A" in k} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("lm_head" in k or "embed" in k for k in weights)
    # Base weights on disk are untouched and the adapter loads with PEFT on top of them.
    from peft import PeftModel

    base = load_model(config.model)
    for name, value in base.state_dict().items():
        torch.testing.assert_close(value, base_before[name].to(value.dtype))  # auto dtype may load bf16
    ids = torch.tensor([list(range(40, 80))])
    with torch.no_grad():
        base_logits = base(ids).logits
    peft_model = PeftModel.from_pretrained(base, out / "adapter")
    assert sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n) == stats["trainable_parameters"]
    with torch.no_grad():
        assert (peft_model(ids).logits - base_logits).abs().max() > 1e-2  # the trained adapter changes what the model computes
    assert json.loads((Path(config.run_dir) / "manifest.json").read_text())["stages"]["distill"]["adapter"].endswith("adapter")


def test_resume_continues_the_same_trajectory(tmp_path, tiny_model_dir, monkeypatch):
    reference = phase1_folder(tmp_path, tiny_model_dir, run="reference")
    run_teacher(reference)
    run_distill(reference)

    config = phase1_folder(tmp_path, tiny_model_dir)
    run_teacher(config)
    import ssb.training_loop as training_loop

    calls = {"n": 0}
    original = training_loop.per_token_terms

    def crash_in_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # inside step 4, after the checkpoint of step 2
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(training_loop, "per_token_terms", crash_in_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_distill(config)
    monkeypatch.setattr(training_loop, "per_token_terms", original)
    run_distill(config)
    got, want = read_jsonl(Path(config.run_dir) / "distill" / "metrics.jsonl"), read_jsonl(Path(reference.run_dir) / "distill" / "metrics.jsonl")
    assert [m["step"] for m in got] == list(range(1, 11))
    for a, b in zip(got, want):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7) and a["lr"] == pytest.approx(b["lr"])
    for k, v in adapter(reference.run_dir).items():
        torch.testing.assert_close(adapter(config.run_dir)[k], v, atol=1e-6, rtol=1e-5)


def test_online_teacher_equals_stored_hidden(tmp_path, tiny_model_dir):
    losses = {}
    for fmt in ("hidden", "online"):
        config = phase1_folder(tmp_path, tiny_model_dir, run=fmt, **{"teacher.format": fmt, "teacher.dtype": "float32", "distill.max_steps": 2})
        run_teacher(config)
        run_distill(config)
        losses[fmt] = [m["loss"] for m in read_jsonl(Path(config.run_dir) / "distill" / "metrics.jsonl")]
    assert losses["online"] == pytest.approx(losses["hidden"], rel=1e-4)
    assert losses["hidden"][0] > 0  # different prompts: the untrained student differs from the teacher


def test_targets_from_another_model_or_format_are_refused(tmp_path, tiny_model_dir):
    config = phase1_folder(tmp_path, tiny_model_dir)
    run_teacher(config)
    other = save_tiny_model(tmp_path / "other-model", seed=1)
    changed = load_config(None, {"run_dir": config.run_dir, "model.name_or_path": str(other), **DISTILL})
    with pytest.raises(RunFolderError, match="model_fingerprint: stored"):
        run_distill(changed)
    topk = load_config(None, {"run_dir": config.run_dir, "model.name_or_path": config.model.name_or_path, "teacher.format": "topk", **DISTILL})
    with pytest.raises(RunFolderError, match="format: stored 'hidden', expected 'topk'"):
        run_distill(topk)


def test_two_process_run_matches_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir):
    """Two CPU processes (gloo), each one micro-batch per step, against one process accumulating both."""
    settings = {"distill.max_steps": 3}
    one = phase1_folder(tmp_path, tiny_model_dir, run="one", **settings)
    two = phase1_folder(tmp_path, tiny_model_dir, run="two", **settings)
    run_teacher(one)
    run_teacher(two)
    run_distill(one)
    flags = [f"--{k}={v}" for k, v in {**DISTILL, **settings}.items()]
    # accelerate's own `launch --cpu` starts one process unless MPI is installed; torchrun + accelerate's
    # CPU flag gives accelerate's MULTI_CPU (gloo) set-up.
    launcher = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(launcher), "--nproc_per_node", "2", "-m", "ssb", "distill", "--run_dir", two.run_dir,
                             "--model.name_or_path", str(tiny_model_dir), "--progress=false", "--backend.name=hf", *flags],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    got, want = read_jsonl(Path(two.run_dir) / "distill" / "metrics.jsonl"), read_jsonl(Path(one.run_dir) / "distill" / "metrics.jsonl")
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in want], rel=1e-5)
    assert [m["grad_norm"] for m in got] == pytest.approx([m["grad_norm"] for m in want], rel=1e-4)
    for k, v in adapter(one.run_dir).items():
        torch.testing.assert_close(adapter(two.run_dir)[k], v, atol=1e-5, rtol=1e-4)
    assert json.loads((Path(two.run_dir) / "manifest.json").read_text())["stages"]["distill"]["inputs"]["processes"] == 2


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(config, monkeypatch):
    run_teacher(config)
    import ssb.training_loop as training_loop

    calls = {"n": 0}
    original = training_loop.per_token_terms

    def nan_in_step_3(*args, **kwargs):
        calls["n"] += 1
        out = original(*args, **kwargs)
        return out * float("nan") if calls["n"] == 5 else out

    monkeypatch.setattr(training_loop, "per_token_terms", nan_in_step_3)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 3; stopping\. Last good checkpoint: .*step-000002"):
        run_distill(config)
    checkpoints = sorted(p.name for p in (Path(config.run_dir) / "distill" / "checkpoints").iterdir())
    assert checkpoints == ["step-000002"]
    assert [m["step"] for m in read_jsonl(Path(config.run_dir) / "distill" / "metrics.jsonl")] == [1, 2]


def test_sft_objective_is_token_level_cross_entropy_on_solution_tokens_only(tmp_path, tiny_model_dir):
    """The control of hard labels: step 1's loss (LoRA B = 0, so the base model) against an
    independent computation with transformers' own label-shifted loss on prompt-masked labels."""
    # float32: model.dtype auto is bfloat16 on a CPU with bf16 units, where the two computations round apart by ~2e-5
    config = phase1_folder(tmp_path, tiny_model_dir, **{"distill.objective": "sft", "distill.normalization": "token", "distill.max_steps": 1,
                                                        "model.dtype": "float32"})
    stats = run_distill(config)  # no teacher stage needed
    assert stats["steps"] == 1
    first = read_jsonl(Path(config.run_dir) / "distill" / "metrics.jsonl")[0]
    from ssb.training_loop import step_batches

    chat = ChatFormat(load_tokenizer(config.model))
    examples = align_examples(Path(config.run_dir) / "teacher.jsonl", Path(config.run_dir) / "student.jsonl", chat)
    model = load_model(config.model)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in step_batches(len(examples), 2, 2, config.seed)[0]:
            e = examples[i]
            ids = torch.tensor([e.student_prompt_ids + e.solution_ids])
            labels = torch.full_like(ids, -100)
            labels[0, len(e.student_prompt_ids):] = torch.tensor(e.solution_ids)
            n = len(e.solution_ids)
            total += model(input_ids=ids, labels=labels).loss.item() * n
            tokens += n
    assert first["loss"] == pytest.approx(total / tokens, rel=1e-5) and first["ce"] == pytest.approx(first["loss"])
    assert first["kl"] == 0.0


KILL_DISTILL = """
import sys, time
sys.path.insert(0, {tests!r})
import ssb.distillation as distillation
import ssb.training_loop as training_loop
from ssb.config import ConfigError, load_config
original = training_loop.per_token_terms
def slow(*args, **kwargs):
    time.sleep(0.4)
    return original(*args, **kwargs)
training_loop.per_token_terms = slow
distillation.run_distill(load_config({config!r}))
"""


def test_kill_9_during_distillation_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    import signal
    import time

    import yaml

    reference = phase1_folder(tmp_path, tiny_model_dir, run="reference")
    run_teacher(reference)
    run_distill(reference)
    config = phase1_folder(tmp_path, tiny_model_dir)
    run_teacher(config)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(__import__("dataclasses").asdict(config)))
    script = KILL_DISTILL.format(tests=str(Path(__file__).parent), config=str(config_file))
    proc = subprocess.Popen([sys.executable, "-c", script])
    checkpoints = Path(config.run_dir) / "distill" / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(checkpoints.glob("step-*")):
        time.sleep(0.05)
    time.sleep(0.5)  # into the next step
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("step-*")) and not (Path(config.run_dir) / "distill" / "adapter").exists()
    run_distill(config)
    got = read_jsonl(Path(config.run_dir) / "distill" / "metrics.jsonl")
    want = read_jsonl(Path(reference.run_dir) / "distill" / "metrics.jsonl")
    assert [m["step"] for m in got] == [m["step"] for m in want]
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in want], rel=1e-5)
    for k, v in adapter(reference.run_dir).items():
        torch.testing.assert_close(adapter(config.run_dir)[k], v, atol=1e-6, rtol=1e-5)


def test_random_teacher_hint_changes_only_the_teachers_context(tmp_path, tiny_model_dir):
    own = phase1_folder(tmp_path, tiny_model_dir, run="own", **{"teacher.dtype": "float32"})
    control = phase1_folder(tmp_path, tiny_model_dir, run="random", **{"teacher.dtype": "float32", "teacher.hint": "random"})
    run_teacher(own)
    run_teacher(control)
    run = Path(control.run_dir)
    view, teacher, student = (read_jsonl(p) for p in (run / "teacher" / "teacher_view.jsonl", run / "teacher.jsonl", run / "student.jsonl"))
    mixed = {e["id"] for e in read_jsonl(run / "refinements.jsonl") if "selection" in e}
    assert len(view) == len(teacher) == 10
    for v, t, s in zip(view, teacher, student):
        i, donor = int(v["id"].rsplit("-", 1)[1]), int(v["hint_from"].rsplit("-", 1)[1])
        assert v["id"] == t["id"] and donor != i and v["hint_from"] in mixed
        assert v["messages"][0] == t["messages"][0] and v["messages"][2] == t["messages"][2] == s["messages"][2]
        assert v["messages"][1]["content"] in possible_hinted_prompts(i, donor)  # its own question, the donor's rollouts
    shards = [load_file(next((Path(c.run_dir) / "teacher").glob("targets-*.safetensors"))) for c in (own, control)]
    assert torch.equal(shards[0]["solution_ids"], shards[1]["solution_ids"])  # the same tokens are scored...
    assert not torch.allclose(shards[0]["hidden"], shards[1]["hidden"])  # ...in another context
    plain = load_config(None, {"run_dir": control.run_dir, "model.name_or_path": control.model.name_or_path, "teacher.dtype": "float32", **DISTILL})
    with pytest.raises(RunFolderError, match="teacher_hint: stored 'random', expected 'own'"):
        run_distill(plain)
    with pytest.raises(ConfigError, match="teacher.hint=random needs stored targets"):
        load_config(None, {"teacher.hint": "random", "teacher.format": "online"})


class _Payload:
    """What a hostile checkpoint would hold: an object whose unpickling runs code (here: writes a file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(config, tmp_path, caplog):
    """distill resumes from distill/checkpoints/step-*/: a folder placed there (a shared run folder) is data, never code;
    refused, it is skipped as a damaged checkpoint is, and training starts over."""
    run_teacher(config)
    marker = tmp_path / "code-ran"
    planted = Path(config.run_dir) / "distill" / "checkpoints" / "step-000001"
    planted.mkdir(parents=True)
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from ssb.lora import build_peft_model

    peft_model = build_peft_model(load_model(config.model), config)
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}, planted / "adapter.safetensors")
    torch.save({"optimizer": _Payload(marker), "scheduler": {}, "step": 1, "rng": torch.get_rng_state()}, planted / "trainer_state.pt")
    with caplog.at_level("WARNING", logger="ssb.checkpoints"):
        stats = run_distill(config)
    assert f"{planted / 'trainer_state.pt'} is not a checkpoint of tensors and plain values, refused" in caplog.text
    assert "training starts over from step 0" in caplog.text and stats["steps"] > 0
    assert not marker.exists()


def _retype_as_int32(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes().replace(b'"F32"', b'"I32"', 1))  # the same bytes, read as int32


def _rewrite(shard: Path, change) -> None:
    from safetensors.torch import save_file

    tensors = load_file(shard)
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, shard)


def _point_outside(shard: Path) -> None:
    outside = shard.parents[2] / "outside"
    outside.mkdir()
    for each in shard.parent.glob("targets-*.safetensors"):
        (outside / each.name).write_bytes(each.read_bytes())
    manifest = json.loads((shard.parent / "manifest.json").read_text())
    for example in manifest["examples"]:
        example["shard"] = f"../../outside/{example['shard']}"
    (shard.parent / "manifest.json").write_text(json.dumps(manifest))


TAMPERED_SHARDS = {
    "dtype": ({}, _retype_as_int32, r"targets-00001\.safetensors: tensor 'hidden' is I32, teacher/manifest\.json says float32 \(format hidden\)"),
    "hidden size": ({}, lambda s: _rewrite(s, lambda t: t.update(hidden=t["hidden"][:, :-1])),
                    r"targets-00001\.safetensors: tensor 'hidden' has shape \[(\d+), (\d+)\], "
                    r"expected \[\1, (?!\2\])\d+\] \(the solution tokens the manifest places in it by the model's hidden size\)"),
    "rows": ({}, lambda s: _rewrite(s, lambda t: t.update(solution_ids=t["solution_ids"][:-1])),
             r"targets-00001\.safetensors: tensor 'solution_ids' has shape \[(\d+)\], expected \[(?!\1\])\d+\] \(the solution tokens"),
    "tensor name": ({}, lambda s: _rewrite(s, lambda t: t.update(x=t.pop("hidden"))),
                    r"targets-00001\.safetensors: holds tensor 'x'; teacher/manifest\.json says format hidden, whose shards hold hidden, "),
    "k": ({"teacher.format": "topk", "teacher.k": 5}, lambda s: _rewrite(s, lambda t: t.update(topk_logits=t["topk_logits"][:, :4])),
          r"targets-00001\.safetensors: tensor 'topk_logits' has shape \[\d+, 4\], expected \[\d+, 5\] "
          r"\(the solution tokens the manifest places in it by the manifest's k\)"),
    "outside the folder": ({}, _point_outside,
                           r"teacher/manifest\.json: shard of example '[^']+': '\.\./\.\./outside/targets-00000\.safetensors' is not a name"),
}


@pytest.mark.parametrize("case", TAMPERED_SHARDS)
def test_a_shard_unlike_its_manifest_or_outside_teacher_is_refused_before_training(tmp_path, tiny_model_dir, case):
    """A hostile or careless edit that also rewrites the recorded digests: every shard's header is checked against
    teacher/manifest.json and the model before training, and a shard is a file in teacher/."""
    from ssb.runfolder.artifacts import file_digest

    overrides, tamper, message = TAMPERED_SHARDS[case]
    config = phase1_folder(tmp_path, tiny_model_dir, **{"teacher.dtype": "float32", "teacher.shard_tokens": 40, **overrides})
    run_teacher(config)
    run = Path(config.run_dir)
    shards = sorted((run / "teacher").glob("targets-*.safetensors"))
    assert len(shards) > 1
    tamper(shards[0] if case == "outside the folder" else shards[1])  # a later shard: checked before the first is used
    manifest = json.loads((run / "manifest.json").read_text())
    recorded = manifest["stages"]["teacher"]["outputs"]
    manifest["stages"]["teacher"]["outputs"] = {name: file_digest(run / name) for name in recorded}
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match=message + ".*; redo the stage: ssb teacher --force"):
        run_distill(config)
    assert not (run / "distill").exists()
