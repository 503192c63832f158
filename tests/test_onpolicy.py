"""The on-policy arm through TRL's SDFT trainer on a tiny random model, on CPU."""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from helpers import write_benchmark, write_questions  # noqa: E402
from ssb.arms.onpolicy import run_onpolicy  # noqa: E402
from ssb.config import load_config  # noqa: E402
from ssb.runfolder.artifacts import read_jsonl  # noqa: E402


def settings(tmp_path, tiny_model_dir, questions=4, **more):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_questions(tmp_path / "q.jsonl", questions)
    return {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "model.dtype": "float32", "data.source": "jsonl",
            "data.path": str(data), "onpolicy.context": "gold-answer", "onpolicy.num_generations": 2, "onpolicy.batch_size": 4,
            "onpolicy.gradient_accumulation_steps": 1,
            "onpolicy.max_steps": 2, "onpolicy.max_completion_length": 6, "distill.lora.r": 4, "progress": False, "backend.name": "hf", **more}


def recording_trainer(monkeypatch, batches: list, losses: list, initial: dict | None = None, trainers: list | None = None, kind: str = "sdft"):
    """TRL's SDFT (or SDPO) trainer, as ssb subclasses it, recording each training batch and the loss it computed on it
    (and, given ``initial``, every parameter before the first step)."""
    import importlib

    module = importlib.import_module(f"trl.experimental.{kind}")
    plain = getattr(module, f"{kind.upper()}Trainer")

    class Recording(plain):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if initial is not None:
                initial.update({name: p.detach().clone() for name, p in self.model.named_parameters()})
            if trainers is not None:
                trainers.append(self)

        def compute_loss(self, model, inputs, *args, **kwargs):
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            batches.append({k: v.detach().clone() for k, v in inputs.items()})
            losses.append(loss.item())
            return loss

    monkeypatch.setattr(module, f"{kind.upper()}Trainer", Recording)


def unpadded(batch: dict, i: int) -> tuple[list[int], list[int], list[int]]:
    """Sample ``i`` of a batch: (student prompt ids, teacher prompt ids, completion ids), padding removed."""
    completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
    prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
    teacher = batch["teacher_input_ids"][i][batch["teacher_attention_mask"][i].bool()].tolist()
    assert teacher[len(teacher) - len(completion):] == completion
    return prompt, teacher[: len(teacher) - len(completion)], completion


def divergence(student_logits, teacher_logits, alpha: float, mode: str, k: int = 3):
    """Per-token divergence written out from its definition: over the vocabulary (full) or over the student's top k
    tokens plus one bucket for the rest (topk with tail); alpha 0 = KL(teacher || student), 1 = KL(student || teacher),
    between = alpha KL(teacher || m) + (1 - alpha) KL(student || m) with m = alpha teacher + (1 - alpha) student."""
    import torch

    p_s, p_t = student_logits.double().softmax(-1), teacher_logits.double().softmax(-1)
    if mode == "topk":
        index = student_logits.topk(k, dim=-1).indices
        top_s, top_t = p_s.gather(-1, index), p_t.gather(-1, index)
        p_s = torch.cat([top_s, 1 - top_s.sum(-1, keepdim=True)], -1)
        p_t = torch.cat([top_t, 1 - top_t.sum(-1, keepdim=True)], -1)

    def kl(p, q):
        return (p * (p.log() - q.log())).sum(-1)

    if alpha == 0:
        return kl(p_t, p_s)
    if alpha == 1:
        return kl(p_s, p_t)
    m = alpha * p_t + (1 - alpha) * p_s
    return alpha * kl(p_t, m) + (1 - alpha) * kl(p_s, m)


@pytest.mark.parametrize("alpha, mode", [(0.5, "full"), (0.0, "topk"), (1.0, "full")])
def test_a_batch_loss_is_the_divergence_of_a_fresh_base_model_on_the_students_own_tokens(tmp_path, tiny_model_dir, monkeypatch, alpha, mode):
    """Step 1's loss equals the per-token divergence, computed here with a freshly loaded base model (no PEFT, no TRL)
    as the teacher on the teacher prompt and as the student (a fresh LoRA computes the base's function) on the student
    prompt, over the completion tokens the student sampled: per sequence the mean over its tokens, then the mean."""
    import torch
    from transformers import AutoModelForCausalLM

    batches, losses = [], []
    recording_trainer(monkeypatch, batches, losses)
    config = load_config(None, settings(tmp_path, tiny_model_dir, **{"onpolicy.alpha": alpha, "onpolicy.distillation": mode,
                                                                      "onpolicy.top_k_tokens": 3, "onpolicy.max_steps": 1}))
    run_onpolicy(config)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    per_sequence = []
    with torch.no_grad():
        for i in range(len(batches[0]["completion_ids"])):
            prompt, teacher, completion = unpadded(batches[0], i)

            student, teacher_logits = (base(torch.tensor([context + completion])).logits[0, len(context) - 1: len(context) + len(completion) - 1]
                                       for context in (prompt, teacher))
            per_sequence.append(divergence(student, teacher_logits, alpha, mode).mean())
    assert losses[0] == pytest.approx(torch.stack(per_sequence).mean().item(), rel=1e-4, abs=1e-7)
    assert losses[0] > 1e-3  # the gold answer in the teacher's prompt changes its distributions


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_with_no_context_the_teacher_prompt_is_the_students_and_the_first_loss_is_zero(tmp_path, tiny_model_dir, monkeypatch, alpha):
    """The identity control: context none gives the teacher exactly the student's prompt, so step 1 (teacher = base =
    the fresh student) has nothing to distil; a context makes the teacher's prompt longer and the loss positive."""
    batches, losses = [], []
    recording_trainer(monkeypatch, batches, losses)
    run_onpolicy(load_config(None, settings(tmp_path / "none", tiny_model_dir, **{"onpolicy.context": "none", "onpolicy.alpha": alpha,
                                                                                  "onpolicy.max_steps": 1})))
    for i in range(4):
        prompt, teacher, _ = unpadded(batches[0], i)
        assert teacher == prompt
    assert losses[0] == 0.0 if alpha in (0.0, 1.0) else abs(losses[0]) < 1e-6  # JSD's mixture rounds (TRL computes in float32)

    batches.clear()
    losses.clear()
    run_onpolicy(load_config(None, settings(tmp_path / "answer", tiny_model_dir, **{"onpolicy.alpha": alpha, "onpolicy.max_steps": 1})))
    from ssb.models import load_tokenizer

    tokenizer = load_tokenizer(load_config(None, settings(tmp_path / "answer", tiny_model_dir)).model)
    for i in range(4):
        prompt, teacher, _ = unpadded(batches[0], i)
        student_text, teacher_text = tokenizer.decode(prompt), tokenizer.decode(teacher)
        assert "The final answer is \\boxed{" in teacher_text and "\\boxed{" not in student_text.split("<|im_start|>user")[1]
        assert teacher_text.endswith("<|im_end|>\n<|im_start|>assistant\n") and student_text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert losses[0] > 1e-3


def test_onpolicy_trains_the_lora_only_records_its_compute_and_is_skipped_when_finished(tmp_path, tiny_model_dir, monkeypatch):
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    batches, losses, initial, trainers = [], [], {}, []
    recording_trainer(monkeypatch, batches, losses, initial, trainers)
    weights_file = Path(tiny_model_dir) / "model.safetensors"
    base_before = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    config = load_config(None, settings(tmp_path, tiny_model_dir, **{"onpolicy.lr": 1e-2}))
    stats = run_onpolicy(config)
    assert stats["steps"] == 2 and stats["context"] == "gold-answer" and stats["sampler"] == "trl"
    # The report's compute: every completion the student sampled (an EOS-ended one counts its EOS), and the steps.
    lengths = [int(b["completion_mask"].sum()) for b in batches]
    assert stats["generated_tokens"] == sum(lengths) and stats["generated_completions"] == 8
    assert stats["this_invocation"]["wall_s"] > 0 and stats["resumed_from_step"] is None
    assert stats["training_wall_s"] >= stats["this_invocation"]["wall_s"] and stats["stopped_by_wall_clock_budget"] is False
    trained = dict(trainers[0].model.named_parameters())
    lora = [name for name in initial if "lora_" in name]
    assert len(lora) == 2 * 7 * 2  # A and B of the 7 projections in both layers
    assert [name for name in lora if torch.equal(trained[name].detach(), initial[name])] == []
    assert [name for name in initial if "lora_" not in name and not torch.equal(trained[name].detach(), initial[name])] == []
    adapter = load_file(tmp_path / "run" / "onpolicy" / "adapter" / "adapter_model.safetensors")
    in_memory = get_peft_model_state_dict(trainers[0].model)
    assert set(adapter) == set(in_memory) and all(torch.equal(adapter[k], in_memory[k].to(adapter[k].dtype)) for k in adapter)
    assert hashlib.sha256(weights_file.read_bytes()).hexdigest() == base_before
    logged = [m["self_distillation/distillation_loss"] for m in read_jsonl(tmp_path / "run" / "onpolicy" / "metrics.jsonl")
              if "self_distillation/distillation_loss" in m]
    assert logged == pytest.approx(losses) and stats["last_distillation_loss"] == pytest.approx(losses[-1])
    assert run_onpolicy(config) == stats  # finished with the same inputs: skipped
    from ssb.runfolder.artifacts import RunFolderError

    with pytest.raises(RunFolderError, match="training_rows_sha256"):  # another context is another training set
        run_onpolicy(load_config(None, settings(tmp_path, tiny_model_dir, **{"onpolicy.lr": 1e-2, "onpolicy.context": "none"})))


def test_a_killed_onpolicy_run_resumes_from_its_newest_complete_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    """Killed after checkpoint 2 (the end of the first epoch), the rerun resumes from it, and its third step (the second
    epoch's first) trains on the questions, samples and loss of an uninterrupted run's third step."""
    import trl.experimental.sdft as sdft
    from transformers import TrainerCallback

    more = {"onpolicy.max_steps": 3, "onpolicy.save_every": 1, "onpolicy.lr": 1e-2}
    run_onpolicy(load_config(None, settings(tmp_path / "a", tiny_model_dir, **more)))
    whole = [m for m in read_jsonl(tmp_path / "a" / "run" / "onpolicy" / "metrics.jsonl") if "loss" in m]
    plain, resumed_from = sdft.SDFTTrainer, []

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt  # where a kill -9 after the second checkpoint stops the run

    class Killed(plain):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Kill)

    class Recording(plain):
        def train(self, resume_from_checkpoint=None, **kwargs):
            resumed_from.append(resume_from_checkpoint)
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    config = load_config(None, settings(tmp_path / "b", tiny_model_dir, **more))
    monkeypatch.setattr(sdft, "SDFTTrainer", Killed)
    with pytest.raises(KeyboardInterrupt):
        run_onpolicy(config)
    monkeypatch.setattr(sdft, "SDFTTrainer", Recording)
    stats = run_onpolicy(config)
    checkpoints = tmp_path / "b" / "run" / "onpolicy" / "checkpoints"
    assert resumed_from == [str(checkpoints / "checkpoint-2")] and stats["steps"] == 3
    # The whole run's wall-clock: the time up to checkpoint 2 (kept there without any budget) plus this invocation's.
    at_two = json.loads((checkpoints / "checkpoint-2" / "ssb_wall_s.json").read_text())
    assert at_two["step"] == 2 and at_two["wall_s"] > 0 and stats["resumed_from_step"] == 2
    assert stats["training_wall_s"] >= at_two["wall_s"] + stats["this_invocation"]["wall_s"] - 0.02  # each rounded to 0.01 s
    resumed = [m for m in read_jsonl(tmp_path / "b" / "run" / "onpolicy" / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in resumed] == [1, 2, 3]
    keys = ("loss", "completions/mean_length", "self_distillation/distillation_loss")
    assert [{k: m[k] for k in keys} for m in resumed] == [{k: m[k] for k in keys} for m in whole]


def test_ssb_run_with_arm_onpolicy_trains_evaluates_and_reports_its_compute(tmp_path, tiny_model_dir):
    from ssb.run import run_all

    write_benchmark(tmp_path / "bench", "gsm8k", 2)
    config = load_config(None, settings(tmp_path, tiny_model_dir, **{"arm": "onpolicy", "data.data_dir": str(tmp_path / "bench"),
                                                                      "eval.benchmarks": ["gsm8k"], "eval.sampling.max_new_tokens": 4}))
    result = run_all(config)
    assert list(result["wall_s"]) == ["onpolicy", "eval"]  # gold-answer reads the data alone: no rollouts, no refine
    assert set(result["pass@1"]) == {"base", "onpolicy"}
    summary = json.loads((tmp_path / "run" / "eval" / "onpolicy" / "gsm8k.summary.json").read_text())
    assert summary["n_questions"] == 2
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert set(stats) == {"onpolicy", "eval/base/gsm8k", "eval/onpolicy/gsm8k"}
    row = f"| onpolicy | run | onpolicy | {stats['onpolicy']['generated_tokens']} | 2 |"
    assert row in Path(result["report"]).read_text()


@pytest.mark.skipif(not importlib.util.find_spec("openvino_genai"), reason="openvino-genai not installed")
def test_on_the_engine_sampler_the_student_trains_on_the_engines_draws(tmp_path, tiny_model_dir, monkeypatch):
    """With sampler engine, step 1's completions are the engine's draw from the initial adapter with the first call's
    seed, the prompts rendered by ssb's chat format: redrawn here outside the trainer."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from ssb.generation import SamplingParams, derive_seed
    from ssb.generation.policy_sampler import PolicySampler, lora_scaling, lora_state
    from ssb.lora import peft_lora_config
    from ssb.models import load_chat_format

    batches, losses = [], []
    recording_trainer(monkeypatch, batches, losses)
    engine = {"onpolicy.sampler": "engine", "backend.name": "openvino", "backend.openvino.weight_format": "fp32",
              "backend.openvino.inference_precision": "f32", "backend.openvino.kv_cache_gb": 1, "backend.batch_size": 4}
    config = load_config(None, settings(tmp_path, tiny_model_dir, **engine))
    stats = run_onpolicy(config)
    assert stats["sampler"] == "engine" and stats["steps"] == 2
    metrics = [m for m in read_jsonl(tmp_path / "run" / "onpolicy" / "metrics.jsonl") if "sampler/lag" in m]
    assert [m["sampler/lag"] for m in metrics] == [0, 0] and all(m["sampler/tokens_per_s"] > 0 for m in metrics)
    chat = load_chat_format(config.model)
    prompts = [unpadded(batches[0], i)[0] for i in range(4)]
    sampler = PolicySampler.from_config(config, chat, lora_scaling(peft_lora_config(config)), lag=0)
    sampler.push(0, lora_state(get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), peft_lora_config(config))))
    params = SamplingParams(n=2, temperature=1.0, top_k=0, max_new_tokens=6, seed=derive_seed(config.seed, "onpolicy", 0, 0))
    redrawn, _ = sampler.generate(prompts[::2], params, 0)
    sampler.close()
    assert [s.token_ids for row in redrawn for s in row] == [unpadded(batches[0], i)[2] for i in range(4)]
    logprobs = [lp for row in redrawn for s in row for lp in s.logprobs]  # the entropy estimate of step 1, recomputed
    assert metrics[0]["sampler/token_nll"] == pytest.approx(-sum(logprobs) / len(logprobs), rel=1e-5)
    questions = [q["question"] for q in read_jsonl(Path(config.data.path))]
    assert [chat.tokenizer.decode(p) for p in prompts[::2]] != [] and all(
        any(q in chat.tokenizer.decode(p) for q in questions) for p in prompts)


def test_student_correct_grades_each_completion_against_the_gold_of_its_prompt(tiny_model_dir):
    from ssb.arms.onpolicy import student_correct
    from ssb.models import load_chat_format

    chat = load_chat_format(load_config(None, {"model.name_or_path": str(tiny_model_dir)}).model)
    seven, twelve, unknown = [1, 2, 3], [4, 5], [6]
    golds = {tuple(seven): "7", tuple(twelve): "12"}
    texts = ["so 3 + 4 = \\boxed{7}", "\\boxed{8}", "\\boxed{12.0}", "twelve, with no box", "\\boxed{6}"]
    completions = [chat.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    assert [chat.tokenizer.decode(c) for c in completions] == texts
    # 7: right, 8: wrong, 12.0: right (math-verify), no boxed answer: wrong; the prompt without a gold is left out.
    assert student_correct(chat, golds, [seven, seven, twelve, twelve, unknown], completions) == 0.5
    assert student_correct(chat, golds, [unknown], completions[:1]) is None


def test_each_step_logs_the_share_of_the_students_completions_graded_against_their_questions_gold(tmp_path, tiny_model_dir, monkeypatch):
    """A stand-in grader (right when the text has an even length) records what it is asked: the logged share is the
    one recomputed from the step's batch, and each completion met its own question's gold."""
    import ssb.grading
    from ssb.models import load_chat_format

    asked = []

    def even(text, gold):
        asked.append((text, gold))
        return len(text) % 2 == 0

    monkeypatch.setattr(ssb.grading, "is_correct", even)
    batches, losses = [], []
    recording_trainer(monkeypatch, batches, losses)
    config = load_config(None, settings(tmp_path, tiny_model_dir))
    run_onpolicy(config)
    chat = load_chat_format(config.model)
    logged = [m["student/correct"] for m in read_jsonl(tmp_path / "run" / "onpolicy" / "metrics.jsonl") if "student/correct" in m]
    texts = [[chat.tokenizer.decode(unpadded(b, i)[2], skip_special_tokens=True) for i in range(4)] for b in batches]
    assert logged == pytest.approx([sum(len(t) % 2 == 0 for t in step) / 4 for step in texts]) and len(logged) == 2
    assert [text for text, _ in asked] == [t for step in texts for t in step]
    prompts = [chat.tokenizer.decode(unpadded(b, i)[0]) for b in batches for i in range(4)]
    assert all(f"what is {gold}?" in prompt for (_, gold), prompt in zip(asked, prompts))


def test_a_training_seed_retrains_on_the_same_rows_and_leaves_the_run_seed_alone(tmp_path, tiny_model_dir):
    """onpolicy.seed repeats training (another LoRA) on the same questions and contexts; unset it is the run's seed."""
    import torch
    from safetensors.torch import load_file

    from ssb.arms.onpolicy import training_seed

    assert training_seed(load_config(None, settings(tmp_path / "x", tiny_model_dir, seed=7))) == 7
    assert training_seed(load_config(None, settings(tmp_path / "x", tiny_model_dir, seed=7, **{"onpolicy.seed": 2}))) == 2
    adapters = {}
    for name, more in (("default", {}), ("again", {}), ("seed-1", {"onpolicy.seed": 1})):
        stats = run_onpolicy(load_config(None, settings(tmp_path / name, tiny_model_dir, **{"onpolicy.lr": 1e-2, **more})))
        assert stats["questions"] == 4
        adapters[name] = load_file(tmp_path / name / "run" / "onpolicy" / "adapter" / "adapter_model.safetensors")
    same = all(torch.equal(adapters["default"][k], adapters["again"][k]) for k in adapters["default"])
    assert same  # the same seed reproduces the run
    assert not all(torch.equal(adapters["default"][k], adapters["seed-1"][k]) for k in adapters["default"])


def test_micro_steps_of_one_completion_train_the_same_update_as_one_batch(tmp_path, tiny_model_dir, monkeypatch):
    """batch_size 1 x gradient_accumulation_steps 4 (a quarter of the memory) against batch_size 4: TRL's loss is the mean
    over completions of each one's token mean and the trainer divides a micro-step's loss by the accumulation steps,
    so the same draws give the same adapter."""
    import torch
    from safetensors.torch import load_file

    batches, losses = [], []
    recording_trainer(monkeypatch, batches, losses)
    adapters, stats = {}, {}
    for name, shape in (("batch", {"onpolicy.batch_size": 4}), ("micro", {"onpolicy.batch_size": 1, "onpolicy.gradient_accumulation_steps": 4})):
        config = load_config(None, settings(tmp_path / name, tiny_model_dir, **{"onpolicy.lr": 1e-2, "onpolicy.max_steps": 1, **shape}))
        stats[name] = run_onpolicy(config)
        adapters[name] = load_file(tmp_path / name / "run" / "onpolicy" / "adapter" / "adapter_model.safetensors")
    run_onpolicy(load_config(None, settings(tmp_path / "zero", tiny_model_dir, **{"onpolicy.lr": 1e-12, "onpolicy.max_steps": 1})))
    initial = load_file(tmp_path / "zero" / "run" / "onpolicy" / "adapter" / "adapter_model.safetensors")
    moved = [k for k in initial if "lora_B" in k and not torch.allclose(adapters["batch"][k], initial[k], atol=1e-6)]
    assert moved  # the step moved the adapter, so the comparison below can fail
    assert all(torch.allclose(adapters["batch"][k], adapters["micro"][k], rtol=1e-4, atol=1e-6) for k in adapters["batch"])
    # The compute accounting counts the optimiser step's completions either way: generated once, trained in four parts.
    assert [len(b["completion_mask"]) for b in batches[:5]] == [4, 1, 1, 1, 1]  # the batch run's one micro-step, then micro's four
    tokens = [int(b["completion_mask"].sum()) for b in batches[:5]]
    assert stats["micro"]["generated_completions"] == stats["batch"]["generated_completions"] == 4
    assert stats["batch"]["generated_tokens"] == tokens[0] and stats["micro"]["generated_tokens"] == sum(tokens[1:])


def test_sdpo_shows_the_teacher_a_correct_sibling_and_distils_only_where_there_is_one(tmp_path, tiny_model_dir, monkeypatch):
    """context successful-rollout (TRL's SDPO trainer): a stand-in grader (right when the text has an even length) marks
    the successful completions. Each completion's teacher prompt is then, recomputed here, ssb's rendering of the system
    prompt and the teacher prompt file around the first *other* successful completion of its question's group, or the
    student's own prompt where there is none, and only the former are distilled; the student never sees a sibling."""
    from types import SimpleNamespace

    import torch
    from safetensors.torch import load_file

    import ssb.grading
    from ssb.models import load_chat_format
    from ssb.prompts import load_prompts, teacher_template

    # The grader correctness_reward calls; student/correct's is_correct calls it too, without a timeout.
    monkeypatch.setattr(ssb.grading, "grade", lambda text, gold, timeout_s=None: SimpleNamespace(correct=len(text) % 2 == 0))
    batches, losses = [], []
    recording_trainer(monkeypatch, batches, losses, kind="sdpo")
    config = load_config(None, settings(tmp_path, tiny_model_dir, **{"onpolicy.context": "successful-rollout", "onpolicy.lr": 1e-2,
                                                                      "onpolicy.max_completion_length": 12}))
    stats = run_onpolicy(config)
    assert stats["steps"] == 2 and stats["context"] == "successful-rollout" and stats["generated_completions"] == 8
    logged = [m["self_distillation/distillation_loss"] for m in read_jsonl(tmp_path / "run" / "onpolicy" / "metrics.jsonl")
              if "self_distillation/distillation_loss" in m]
    assert [stats["first_distillation_loss"], stats["last_distillation_loss"]] == [logged[0], logged[-1]]
    chat = load_chat_format(config.model)
    system = load_prompts().system
    template = teacher_template()  # literal braces doubled, as TRL's str.format reads it
    distilled = 0
    for batch in batches:
        rows = [unpadded(batch, i) for i in range(4)]
        texts = [chat.tokenizer.decode(completion, skip_special_tokens=True) for _, _, completion in rows]
        for i, (prompt, teacher, _) in enumerate(rows):
            group = range(i // 2 * 2, i // 2 * 2 + 2)  # num_generations 2
            siblings = [j for j in group if j != i and len(texts[j]) % 2 == 0]
            question = chat.tokenizer.decode(prompt).split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
            if siblings:
                context = f"A correct solution:\n{texts[siblings[0]]}"
                user = template.format(prompt=question, privileged_context=context)
                assert teacher == chat.prompt_ids([{"role": "system", "content": system}, {"role": "user", "content": user}])
                assert texts[siblings[0]] not in chat.tokenizer.decode(prompt)
            else:
                assert teacher == prompt
            assert batch["self_distillation_mask"][i].item() == float(bool(siblings))
            distilled += bool(siblings)
    assert 0 < distilled < 8  # both cases met (the stand-in grader's split of these draws)
    # Step 1's trained loss, recomputed with a fresh base model as teacher and student (a fresh LoRA computes the base's
    # function): each completion's mean divergence over its tokens where it has a correct sibling, 0 where it has none,
    # averaged over the step's completions.
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    per_sequence = []
    with torch.no_grad():
        for i in range(4):
            prompt, teacher, completion = unpadded(batches[0], i)
            student, teacher_logits = (base(torch.tensor([context + completion])).logits[0, len(context) - 1: len(context) + len(completion) - 1]
                                       for context in (prompt, teacher))
            per_sequence.append(batches[0]["self_distillation_mask"][i] * divergence(student, teacher_logits, 0.5, "topk", k=100).mean())
    assert losses[0] == pytest.approx(torch.stack(per_sequence).mean().item(), rel=1e-4, abs=1e-7) and losses[0] > 0
    adapter = load_file(tmp_path / "run" / "onpolicy" / "adapter" / "adapter_model.safetensors")
    assert any(k for k in adapter if "lora_B" in k and adapter[k].abs().sum() > 0)  # it trained (PEFT starts B at 0)
    with pytest.raises(Exception, match="num_generations"):
        load_config(None, settings(tmp_path / "one", tiny_model_dir, **{"onpolicy.context": "successful-rollout", "onpolicy.num_generations": 1}))
