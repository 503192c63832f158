"""The instrument and the knobs of the evidence study: identity control, exact targets, KD direction,
end-of-turn exclusion, training seed, held-out KD and per-step diagnostics, each against an
independent computation with transformers' full forward on a tiny model."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from helpers import phase1_folder
from ssb.alignment import align_examples, answer_token_flags, boxed_span
from ssb.chat import ChatFormat
from ssb.distillation import run_distill
from ssb.models import load_model, load_tokenizer
from ssb.runfolder.artifacts import read_jsonl
from ssb.teacher_targets import require_bias_free_head, run_teacher
from ssb.training_loop import step_batches

EXACT = {"model.dtype": "float32", "distill.normalization": "token", "distill.max_steps": 1}


def solution_logits(model, prompt_ids: list[int], solution_ids: list[int]) -> torch.Tensor:
    """(L, V) float64 logits predicting each solution token: a plain full forward, positions p-1+j."""
    ids = torch.tensor([prompt_ids + solution_ids[:-1]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    return logits[len(prompt_ids) - 1 :]


def first_step(config) -> dict:
    run_teacher(config)
    run_distill(config)
    return read_jsonl(Path(config.run_dir) / "distill" / "metrics.jsonl")[0]


def step_one_pairs(config, view: str = "teacher"):
    """(example, teacher logits, student logits) of step 1's examples, in float64."""
    chat = ChatFormat(load_tokenizer(config.model))
    run = Path(config.run_dir)
    examples = align_examples(run / ("student.jsonl" if view == "student" else "teacher.jsonl"), run / "student.jsonl", chat)
    model = load_model(config.model).eval()
    for i in step_batches(len(examples), config.distill.batch_size, config.distill.epochs, config.seed)[0]:
        e = examples[i]
        yield e, solution_logits(model, e.teacher_prompt_ids, e.solution_ids), solution_logits(model, e.student_prompt_ids, e.solution_ids)


@pytest.mark.parametrize("fmt", ["hidden", "full", "topk", "online"])
def test_identity_control_gives_zero_kd_for_every_format(tmp_path, tiny_model_dir, fmt):
    config = phase1_folder(tmp_path, tiny_model_dir, **EXACT, **{"teacher.format": fmt, "teacher.k": 5, "teacher.view": "student"})
    first = first_step(config)
    assert abs(first["kl"]) < 1e-6, first
    assert first["top1_agreement"] == 1.0
    if fmt != "topk":
        assert first["teacher_entropy"] == pytest.approx(first["student_entropy"], abs=1e-5)
        assert first["teacher_nll"] == pytest.approx(first["ce"], abs=1e-5)  # the same model scoring the same tokens


def test_the_hinted_view_is_not_the_identity(tmp_path, tiny_model_dir):
    config = phase1_folder(tmp_path, tiny_model_dir, **EXACT)
    assert first_step(config)["kl"] > 1e-4


@pytest.mark.parametrize("dtype, stored", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_auto_storage_dtype_is_the_compute_dtype(tmp_path, tiny_model_dir, dtype, stored):
    config = phase1_folder(tmp_path, tiny_model_dir, **{"model.dtype": dtype})
    assert config.teacher.dtype == "auto"
    run_teacher(config)
    folder = Path(config.run_dir) / "teacher"
    assert read_manifest(folder)["dtype"] == dtype
    assert load_file(next(folder.glob("targets-*.safetensors")))["hidden"].dtype == stored


def read_manifest(folder: Path) -> dict:
    import json

    return json.loads((folder / "manifest.json").read_text())


def test_a_head_bias_is_refused(tmp_path, tiny_model_dir, monkeypatch):
    import ssb.teacher_targets as teacher_targets

    def with_bias(model_config):
        model = load_model(model_config)
        head = model.get_output_embeddings()
        head.bias = torch.nn.Parameter(torch.randn(head.out_features))
        return model

    config = phase1_folder(tmp_path, tiny_model_dir)
    require_bias_free_head(load_model(config.model), "tiny")  # Qwen2's head has none
    monkeypatch.setattr(teacher_targets, "load_model", with_bias)
    with pytest.raises(ValueError, match="the output head has a bias"):
        run_teacher(config)


def divergences(t: torch.Tensor, s: torch.Tensor, T: float, beta: float) -> dict[str, torch.Tensor]:
    p, q = F.softmax(t / T, -1), F.softmax(s / T, -1)
    kl = lambda a, b: (a * (a / b).log()).sum(-1)  # noqa: E731
    m = beta * p + (1 - beta) * q
    return {"forward": T**2 * kl(p, q), "reverse": T**2 * kl(q, p), "jsd": T**2 * (beta * kl(p, m) + (1 - beta) * kl(q, m))}


@pytest.mark.parametrize("direction, exclude_eot", [("forward", True), ("reverse", False), ("jsd", False)])
def test_kd_direction_and_end_of_turn_exclusion_match_a_full_forward(tmp_path, tiny_model_dir, direction, exclude_eot):
    config = phase1_folder(tmp_path, tiny_model_dir, **EXACT, **{"distill.kd_direction": direction, "distill.jsd_beta": 0.3,
                                                                 "distill.kd_exclude_eot": exclude_eot})
    first = first_step(config)
    total, tokens, ce, eot = 0.0, 0, 0.0, 0.0
    for e, t, s in step_one_pairs(config):
        per_token = divergences(t, s, config.distill.temperature, 0.3)[direction]
        if exclude_eot:
            per_token[-1] = 0.0  # the end-of-turn token, last of every solution
        total += per_token.sum().item()
        eot += per_token[-1].item()
        ce += F.cross_entropy(s, torch.tensor(e.solution_ids), reduction="sum").item()
        tokens += len(e.solution_ids)
    assert first["kl"] == pytest.approx(total / tokens, rel=1e-4)
    assert first["ce"] == pytest.approx(ce / tokens, rel=1e-4)  # CE keeps the end-of-turn token either way
    assert first["kd_share_eot"] == pytest.approx(eot / total, rel=1e-4, abs=1e-9)  # 0 when excluded


def test_step_diagnostics_match_a_full_forward(tmp_path, tiny_model_dir):
    config = phase1_folder(tmp_path, tiny_model_dir, **EXACT)
    first = first_step(config)
    chat = ChatFormat(load_tokenizer(config.model))
    sums = dict.fromkeys(["teacher_entropy", "student_entropy", "teacher_nll", "top1_agreement", "kd", "kd_eot", "kd_answer"], 0.0)
    tokens = 0
    for e, t, s in step_one_pairs(config):
        log_p, log_q = F.log_softmax(t, -1), F.log_softmax(s, -1)
        kd = divergences(t, s, config.distill.temperature, 0.5)["forward"]
        flags = torch.tensor(answer_token_flags(chat, e.solution_ids))
        sums["teacher_entropy"] += -(log_p.exp() * log_p).sum().item()
        sums["student_entropy"] += -(log_q.exp() * log_q).sum().item()
        sums["teacher_nll"] += -log_p[torch.arange(len(e.solution_ids)), torch.tensor(e.solution_ids)].sum().item()
        sums["top1_agreement"] += (t.argmax(-1) == s.argmax(-1)).sum().item()
        sums["kd"] += kd.sum().item()
        sums["kd_eot"] += kd[-1].item()
        sums["kd_answer"] += kd[flags].sum().item()
        tokens += len(e.solution_ids)
    for name in ("teacher_entropy", "student_entropy", "teacher_nll", "top1_agreement"):
        assert first[name] == pytest.approx(sums[name] / tokens, rel=1e-4, abs=1e-6), name
    assert first["kd_share_eot"] == pytest.approx(sums["kd_eot"] / sums["kd"], rel=1e-4)
    assert first["kd_share_answer"] == pytest.approx(sums["kd_answer"] / sums["kd"], rel=1e-4, abs=1e-7)


def test_answer_tokens_are_those_of_the_last_boxed_answer(tokenizer):
    chat = ChatFormat(tokenizer)  # one token per character
    text = "first \\boxed{1}, then 2+2 \\boxed{4} done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [chat.end_of_turn_id]
    flags = answer_token_flags(chat, ids)
    assert "".join(c for c, f in zip(text, flags) if f) == "\\boxed{4}" and flags[-1] is False
    assert boxed_span("no answer") is None and boxed_span("\\boxed{unclosed") is None


def test_training_seed_changes_order_and_init_but_not_the_data_and_holdout(tmp_path, tiny_model_dir):
    common = {"model.dtype": "float32", "distill.heldout_examples": 2, "distill.heldout_every": 2}
    default = phase1_folder(tmp_path, tiny_model_dir, run="default", **common)
    same = phase1_folder(tmp_path, tiny_model_dir, run="same", **common, **{"distill.seed": 0})
    other = phase1_folder(tmp_path, tiny_model_dir, run="other", **common, **{"distill.seed": 1})
    runs = {"default": default, "same": same, "other": other}
    stats = {name: (run_teacher(c), run_distill(c))[1] for name, c in runs.items()}
    metrics = {name: read_jsonl(Path(c.run_dir) / "distill" / "metrics.jsonl") for name, c in runs.items()}
    assert stats["default"]["examples"] == stats["other"]["examples"] == 8 and stats["other"]["heldout_examples"] == 2
    assert [m["loss"] for m in metrics["default"]] == [m["loss"] for m in metrics["same"]]  # distill.seed = seed: the same run
    # The other seed walks the same 8 training examples in its own order.
    chat = ChatFormat(load_tokenizer(default.model))
    run = Path(other.run_dir)
    examples = align_examples(run / "teacher.jsonl", run / "student.jsonl", chat)
    from ssb.distillation import split_heldout

    training, heldout = split_heldout(examples, 2, other.seed)
    expected = [sum(len(training[i].solution_ids) for i in step) for step in step_batches(8, 2, 2, 1)]
    assert [m["solution_tokens"] for m in metrics["other"]] == expected
    assert expected != [sum(len(training[i].solution_ids) for i in step) for step in step_batches(8, 2, 2, 0)]
    # Held-out KD on step 1 and every 2nd step (8 steps: the last included), the same held-out examples for every seed.
    assert [m["step"] for m in metrics["other"] if "heldout_kd" in m] == [1, 2, 4, 6, 8]
    first_default, first_other = metrics["default"][0]["heldout_kd"], metrics["other"][0]["heldout_kd"]
    assert first_default == pytest.approx(first_other, rel=1e-5)  # LoRA B = 0 at step 1: the base model on the same examples
    model = load_model(other.model).eval()
    per_example = []
    for e in heldout:
        t, s = solution_logits(model, e.teacher_prompt_ids, e.solution_ids), solution_logits(model, e.student_prompt_ids, e.solution_ids)
        per_example.append(divergences(t, s, other.distill.temperature, 0.5)["forward"].mean().item())
    assert first_other == pytest.approx(sum(per_example) / 2, rel=1e-4)


def test_sft_reports_the_heldout_solutions_cross_entropy(tmp_path, tiny_model_dir):
    config = phase1_folder(tmp_path, tiny_model_dir, run="sft", **{"model.dtype": "float32", "distill.objective": "sft",
                                                                  "distill.heldout_examples": 2, "distill.heldout_every": 3})
    run_distill(config)
    metrics = read_jsonl(Path(config.run_dir) / "distill" / "metrics.jsonl")
    logged = [m for m in metrics if "heldout_ce" in m]
    assert [m["step"] for m in logged] == [1, 3, 6, 8] and not any("heldout_kd" in m for m in metrics)
    assert logged[-1]["heldout_ce"] < logged[0]["heldout_ce"]  # training on the other 6 solutions also fits these better
    # The last step's value, recomputed from the saved final adapter: mean over the held-out examples of the mean
    # per-token NLL of their solutions in the student view.
    from peft import PeftModel

    from ssb.distillation import split_heldout

    chat = ChatFormat(load_tokenizer(config.model))
    run = Path(config.run_dir)
    _, heldout = split_heldout(align_examples(run / "teacher.jsonl", run / "student.jsonl", chat), 2, config.seed)
    model = PeftModel.from_pretrained(load_model(config.model), str(run / "distill" / "adapter")).eval()
    per_example = [F.cross_entropy(solution_logits(model, e.student_prompt_ids, e.solution_ids).float(),
                                   torch.tensor(e.solution_ids)).item() for e in heldout]
    assert logged[-1]["heldout_ce"] == pytest.approx(sum(per_example) / 2, rel=1e-4)


def test_short_solutions_are_left_out_of_training_and_the_holdout_stays(tmp_path, tiny_model_dir):
    from ssb.distillation import split_heldout

    common = {"model.dtype": "float32", "distill.objective": "sft", "distill.heldout_examples": 2, "distill.heldout_every": 2}
    everything = phase1_folder(tmp_path, tiny_model_dir, run="all", **common)
    chat = ChatFormat(load_tokenizer(everything.model))
    run = Path(everything.run_dir)
    training, heldout = split_heldout(align_examples(run / "teacher.jsonl", run / "student.jsonl", chat), 2, everything.seed)
    lengths = sorted(len(e.solution_ids) for e in training)
    threshold = lengths[len(lengths) // 2]
    kept = [e for e in training if len(e.solution_ids) >= threshold]
    assert 0 < len(kept) < len(training)  # the fixture's solutions differ in length
    filtered = phase1_folder(tmp_path, tiny_model_dir, run="filtered", **common, **{"distill.min_solution_tokens": threshold})
    stats_all, stats = run_distill(everything), run_distill(filtered)
    assert (stats["examples"], stats["short_examples_left_out"]) == (len(kept), len(training) - len(kept))
    assert (stats_all["examples"], stats_all["short_examples_left_out"]) == (len(training), 0)
    # Every step trains on kept examples only, in the order the data seed gives the kept list.
    metrics = read_jsonl(Path(filtered.run_dir) / "distill" / "metrics.jsonl")
    expected = [sum(len(kept[i].solution_ids) for i in step) for step in step_batches(len(kept), 2, 2, filtered.seed)]
    assert [m["solution_tokens"] for m in metrics] == expected
    # The held-out examples are drawn before the filter: step 1 (LoRA B = 0) scores the same ones as the unfiltered run.
    first_all = read_jsonl(run / "distill" / "metrics.jsonl")[0]["heldout_ce"]
    assert metrics[0]["heldout_ce"] == pytest.approx(first_all, rel=1e-6)
    # The option is recorded in the stage's inputs only when set: folders distilled before it existed stay finished.
    recorded = {name: json.loads((Path(c.run_dir) / "manifest.json").read_text())["stages"]["distill"]["inputs"]["distill"]
                for name, c in (("all", everything), ("filtered", filtered))}
    assert "min_solution_tokens" not in recorded["all"] and recorded["filtered"]["min_solution_tokens"] == threshold


def test_min_solution_tokens_that_leaves_nothing_is_refused(tmp_path, tiny_model_dir):
    from ssb.runfolder.folder import RunFolderError

    config = phase1_folder(tmp_path, tiny_model_dir, run="none", **{"distill.objective": "sft", "distill.min_solution_tokens": 10**6})
    with pytest.raises(RunFolderError, match="fewer than distill.min_solution_tokens=1000000"):
        run_distill(config)
    assert not (Path(config.run_dir) / ".ssb" / "distill.json").exists()  # refused before the stage started
