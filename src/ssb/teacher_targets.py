"""Stage 3 (Algorithm 1, lines 30-37): the frozen base model's targets on every solution token.

One batched forward per group of teacher examples replaces the paper's token-by-token loop (the
logits at position p-1+j predict solution token j; a test checks both agree). What is stored,
per ``teacher.format``, in safetensors shards under ``teacher/``:

- ``hidden``: final hidden states (after the last norm), (tokens, hidden_size). Logits are
  recomputed at train time through the frozen output head, chunk by chunk: exact when stored in
  the model's compute dtype (``teacher.dtype: auto``), at hidden_size x 2 bytes per token in bf16
  (x 4 in float32) instead of vocab x 4.
- ``topk``: the k largest logits, their ids, and ``logsumexp(logits / T)`` over the full vocabulary,
  so the loss can give the remaining mass to a tail bucket.
- ``full``: all logits (for validation and small vocabularies).
- ``online``: nothing; the teacher pass runs during training with the adapters disabled.

Every shard also holds the solution ids, so training can check they are the ones it tokenized.
``teacher/manifest.json`` (written last) records format, dtype, k, temperature, model and tokenizer
fingerprints and the code version; loading targets made otherwise is refused, and so is a shard whose
header (tensor names, dtypes, shapes) differs from what the manifest and the model say it holds, or
whose name is not a file in ``teacher/``, before any is used. This module is the only
one that knows these layouts: training asks ``Teacher`` for a micro-batch's rows and for the KD of
student logits against them, whatever the format.

``teacher.hint=random`` (a control) computes the targets after a hinted prompt built from another
question's rollouts, for the same solutions; that teacher view is kept as ``teacher/teacher_view.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

import ssb
from ssb.alignment import AlignedExample, align_examples, pack, solution_hidden_states
from ssb.chat import ChatFormat, tokenizer_hash
from ssb.config import SSBConfig
from ssb.hints import hinted_prompt, random_donor
from ssb.losses import kd_full, kl_topk, token_diagnostics
from ssb.models import load_model, load_tokenizer
from ssb.prompts import load_prompts
from ssb.runfolder.artifacts import RunFolderError, check_identifier, read_jsonl, write_json_atomic, write_jsonl_atomic, writing
from ssb.runfolder.file_modes import follow_umask
from ssb.runfolder.folder import RunFolder, invocation_stats, model_provenance

_log = logging.getLogger(__name__)
TARGETS_VERSION = 1


def random_hint_teacher_view(folder: RunFolder, config: SSBConfig) -> list[dict]:
    """``teacher.jsonl`` with each hinted prompt rebuilt from another mixed question's selected pair.

    The solution, the question and the student view stay as refined; only the rollouts the teacher
    sees change. Donors are drawn as ``refine.hint=random`` draws them, so the two controls show a
    question the same foreign pair.
    """
    prompts = load_prompts(config.prompts.system, config.prompts.hinted)
    records = {r["id"]: r for r in read_jsonl(folder.file("rollouts.jsonl"))}
    selections = {e["id"]: e["selection"] for e in read_jsonl(folder.file("refinements.jsonl")) if "selection" in e}
    mixed = [records[i] for i in sorted(selections, key=lambda i: records[i]["index"])]
    view = []
    for example in read_jsonl(folder.file("teacher.jsonl")):
        donor = random_donor(example["id"], mixed, config.seed, "teacher.hint")
        pair = selections[donor["id"]]
        prompt = hinted_prompt(prompts, records[example["id"]]["question"], donor, pair["correct_index"], pair["wrong_index"])
        system, user, solution = example["messages"]
        view.append({**example, "hint_from": donor["id"], "messages": [system, {**user, "content": prompt}, solution]})
    return view


def model_fingerprint(model) -> str:
    """Architecture plus a checksum of a few weight tensors: tells one checkpoint from another."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    head = model.get_output_embeddings().weight
    for tensor in (head[:8], head[-8:], model.get_input_embeddings().weight[:8]):
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def storage_dtype(config: SSBConfig, model) -> torch.dtype:
    """What hidden states / full logits are stored in: ``teacher.dtype``, or (auto) the model's compute dtype."""
    return model.get_output_embeddings().weight.dtype if config.teacher.dtype == "auto" else getattr(torch, config.teacher.dtype)


def require_bias_free_head(model, name: str) -> None:
    """Logits are recomputed as hidden @ W^T on both sides (targets and the student's fused loss)."""
    if getattr(model.get_output_embeddings(), "bias", None) is not None:
        raise ValueError(f"{name}: the output head has a bias; ssb computes logits as hidden states times the head's weight "
                         "(teacher targets and the student's chunked loss), so models with a head bias are not supported")


def teacher_view_path(folder: RunFolder, config: SSBConfig) -> Path:
    """The conversations the teacher sees: the hinted view, another question's hint, or the student's own view."""
    if config.teacher.view == "student":
        return folder.file("student.jsonl")
    if config.teacher.hint == "random":
        return folder.file("teacher") / "teacher_view.jsonl"  # written by run_teacher, kept with the targets
    return folder.file("teacher.jsonl")


def targets_identity(config: SSBConfig, model, tokenizer) -> dict:
    """What targets depend on; compared field by field when they are loaded."""
    identity = {"format": config.teacher.format, "model_fingerprint": model_fingerprint(model),
                "tokenizer_hash": tokenizer_hash(tokenizer), "targets_version": TARGETS_VERSION,
                "teacher_hint": config.teacher.hint, "teacher_view": config.teacher.view}
    if config.teacher.format in ("hidden", "full"):
        identity["dtype"] = str(storage_dtype(config, model)).removeprefix("torch.")
    if config.teacher.format == "topk":
        identity.update(k=config.teacher.k, temperature=config.distill.temperature)
    return identity


def targets_for(hidden: torch.Tensor, head: torch.nn.Module, config: SSBConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """hidden (L, H) -> the tensors stored for one example in ``config.teacher.format``; ``dtype`` is what hidden states and
    full logits are stored in (``storage_dtype``)."""
    fmt = config.teacher.format
    if fmt == "hidden":
        return {"hidden": hidden.to(dtype)}
    logits = head(hidden.to(head.weight.dtype)).float()  # (L, V) in the model's dtype, as distillation computes them; never (B, S, V)
    if fmt == "full":
        return {"logits": logits.to(dtype)}
    values, ids = logits.topk(min(config.teacher.k, logits.shape[-1]), dim=-1)
    return {"topk_logits": values, "topk_ids": ids.to(torch.int32),
            "log_normalizer": torch.logsumexp(logits / config.distill.temperature, dim=-1)}


@torch.inference_mode()
def compute_targets(model, examples: list[AlignedExample], config: SSBConfig, pad_id: int, progress: bool = False):
    """Yields (example, {name: tensor (L, ...)}) in order, batching the forward passes."""
    head, dtype = model.get_output_embeddings(), storage_dtype(config, model)
    size = config.teacher.batch_size
    for start in tqdm(range(0, len(examples), size), desc="teacher", disable=not progress):
        group = examples[start : start + size]
        batch = pack([e.teacher_prompt_ids for e in group], [e.solution_ids for e in group], pad_id)
        hidden = solution_hidden_states(model, batch).float()
        offset = 0
        for example in group:
            n = len(example.solution_ids)
            yield example, {k: v.cpu().contiguous() for k, v in targets_for(hidden[offset : offset + n], head, config, dtype).items()}
            offset += n


def write_shard(folder: Path, index: int, pieces: list[tuple[AlignedExample, dict]]) -> dict[str, tuple[str, int, int]]:
    """Shard ``index`` of ``folder``: the (example, ``targets_for`` tensors) pieces, row after row, with their solution ids;
    returns each example's id -> (shard file, first row, rows)."""
    name = f"targets-{index:05d}.safetensors"
    tensors = {key: torch.cat([t[key] for _, t in pieces]) for key in pieces[0][1]}
    tensors["solution_ids"] = torch.tensor([i for e, _ in pieces for i in e.solution_ids], dtype=torch.int32)
    with writing(folder / name):
        save_file(tensors, folder / name)
        follow_umask(folder / name)
    spans, start = {}, 0
    for example, _ in pieces:
        spans[example.id] = (name, start, len(example.solution_ids))
        start += len(example.solution_ids)
    return spans


def run_teacher(config: SSBConfig, force: bool = False) -> dict:
    folder = RunFolder(config.run_dir)
    # top-k targets keep logsumexp(logits / T): they depend on the distillation temperature
    stage = folder.stage("teacher", config, temperature=config.distill.temperature if config.teacher.format == "topk" else None)
    if not stage.begin(force):
        return stage.stats()
    tokenizer = load_tokenizer(config.model)
    chat = ChatFormat(tokenizer)
    out = folder.file("teacher")
    out.mkdir(exist_ok=True)
    teacher_view = teacher_view_path(folder, config)
    if config.teacher.hint == "random":
        write_jsonl_atomic(teacher_view, random_hint_teacher_view(folder, config))
    examples = align_examples(teacher_view, folder.file("student.jsonl"), chat)
    for stale in out.glob("targets-*.safetensors"):
        stale.unlink()  # shards are cheap to recompute and an interrupted set is not trusted
    model = load_model(config.model)
    require_bias_free_head(model, config.model.name_or_path)
    start, spans, pending, shard_tokens, index = time.monotonic(), {}, [], 0, 0
    if config.teacher.format != "online":
        for example, tensors in compute_targets(model, examples, config, chat.pad_id, config.progress):
            pending.append((example, tensors))
            shard_tokens += len(example.solution_ids)
            if shard_tokens >= config.teacher.shard_tokens:
                spans.update(write_shard(out, index, pending))
                pending, shard_tokens, index = [], 0, index + 1
        if pending:
            spans.update(write_shard(out, index, pending))
    tokens = sum(len(e.solution_ids) for e in examples)
    stored = sum(p.stat().st_size for p in out.glob("targets-*.safetensors"))
    manifest = {**targets_identity(config, model, tokenizer), "ssb_version": ssb.__version__,
                "examples": [{"id": e.id, "shard": spans[e.id][0], "start": spans[e.id][1], "length": spans[e.id][2]} if e.id in spans
                             else {"id": e.id, "length": len(e.solution_ids)} for e in examples]}
    write_json_atomic(out / "manifest.json", manifest)
    stats = {"examples": len(examples), "solution_tokens": tokens, "bytes_stored": stored,
             "bytes_per_token": round(stored / tokens, 1) if tokens else 0.0,
             "this_invocation": invocation_stats(time.monotonic() - start)}
    stage.finish(model_provenance(config, tokenizer), stats)
    return stats


HEADER_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "int32": "I32"}  # torch's names -> safetensors header's
REDO = "redo the stage: ssb teacher --force"


def shard_layout(manifest: dict, rows: int, vocab_size: int | None, hidden_size: int | None) -> dict[str, tuple[str, list]]:
    """What a shard of ``rows`` solution tokens holds, as ``targets_for`` and ``write_shard`` write it: tensor name ->
    (dtype, [(size, what the size is)] per dimension); a size of None (the model's, when not given) is not checked."""
    fmt, tokens = manifest.get("format"), (rows, "the solution tokens the manifest places in it")
    if fmt in ("hidden", "full"):
        if manifest.get("dtype") not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype {manifest.get('dtype')!r} is not one ssb stores (float32, bfloat16, float16)")
        width = (hidden_size, "the model's hidden size") if fmt == "hidden" else (vocab_size, "the model's vocabulary")
        layout = {"hidden" if fmt == "hidden" else "logits": (manifest.get("dtype"), [tokens, width])}
    elif fmt == "topk":
        if not isinstance(manifest.get("k"), int) or isinstance(manifest["k"], bool) or manifest["k"] < 1:
            raise ValueError(f"k {manifest.get('k')!r} is not a count of logits")
        k = manifest["k"] if vocab_size is None else min(manifest["k"], vocab_size)  # a vocabulary under k keeps it all
        width = (k, "the manifest's k")
        layout = {"topk_logits": ("float32", [tokens, width]), "topk_ids": ("int32", [tokens, width]), "log_normalizer": ("float32", [tokens])}
    else:
        raise ValueError(f"format {fmt!r} is not one ssb stores in shards (hidden, full, topk)")
    return {**layout, "solution_ids": ("int32", [tokens])}


class TeacherTargets:
    """Read access to stored targets, after checking they were made for this model and settings and that every shard
    holds what the manifest says (``vocab_size`` and ``hidden_size``, the model's, when given)."""

    def __init__(self, folder: Path, expected: dict, vocab_size: int | None = None, hidden_size: int | None = None):
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise RunFolderError(f"{folder}: no teacher manifest; run `ssb teacher` first")
        self.manifest = json.loads(manifest_path.read_text())
        differences = [f"{k}: stored {self.manifest.get(k)!r}, expected {v!r}" for k, v in expected.items() if self.manifest.get(k) != v]
        if differences:
            raise RunFolderError(f"{folder}: teacher targets were made for something else; " + "; ".join(differences)
                                 + ". Re-run `ssb teacher --force` for this model and settings.")
        self.folder = folder
        self.spans = {e["id"]: e for e in self.manifest["examples"]}
        self._shards: dict[str, dict[str, torch.Tensor]] = {}
        for name, rows in self._rows_per_shard().items():
            self._check_header(name, rows, vocab_size, hidden_size)

    def _rows_per_shard(self) -> dict[str, int]:
        """Shard name -> its rows, from the manifest: a shard's examples follow one another from row 0."""
        manifest, placed = self.folder / "manifest.json", {}
        for span in self.spans.values():
            if "shard" not in span:
                continue
            try:
                name = check_identifier(span["shard"], f"shard of example {span['id']!r}")  # a file in teacher/, nowhere else
            except ValueError as exc:
                raise RunFolderError(f"{manifest}: {exc}; {REDO}") from None
            if not all(isinstance(span.get(key), int) and not isinstance(span[key], bool) and span[key] >= 0 for key in ("start", "length")):
                raise RunFolderError(f"{manifest}: example {span['id']!r} has start {span.get('start')!r} and length "
                                     f"{span.get('length')!r}, not row counts; {REDO}")
            placed.setdefault(name, []).append(span)
        rows = {}
        for name, spans in placed.items():
            rows[name] = 0
            for span in sorted(spans, key=lambda s: s["start"]):
                if span["start"] != rows[name]:
                    raise RunFolderError(f"{manifest}: example {span['id']!r} starts at row {span['start']} of {name}, not {rows[name]}: "
                                         f"the examples of a shard follow one another from row 0; {REDO}")
                rows[name] += span["length"]
        return rows

    def _check_header(self, name: str, rows: int, vocab_size: int | None, hidden_size: int | None) -> None:
        """Every tensor of shard ``name``, by name, dtype and shape, against the manifest and the model, before any is read."""
        path, manifest = self.folder / name, f"{self.folder.name}/manifest.json"  # the one in the shard's folder
        if path.is_symlink():
            raise RunFolderError(f"{path}: is a link; teacher targets are read only from the files in {self.folder}; {REDO}")
        try:
            with safe_open(path, framework="pt") as f:
                header = {key: (f.get_slice(key).get_dtype(), f.get_slice(key).get_shape()) for key in f.keys()}
        except (SafetensorError, OSError) as exc:  # a truncated, damaged or missing shard
            raise RunFolderError(f"{path}: teacher targets cannot be read ({exc}); recompute them with `ssb teacher --force`") from None
        try:
            layout = shard_layout(self.manifest, rows, vocab_size, hidden_size)
        except ValueError as exc:
            raise RunFolderError(f"{self.folder / 'manifest.json'}: {exc}; {REDO}") from None
        fmt = f"{manifest} says format {self.manifest['format']}"
        extra = sorted(header.keys() - layout.keys())
        if extra:
            raise RunFolderError(f"{path}: holds tensor {extra[0]!r}; {fmt}, whose shards hold {', '.join(layout)}; {REDO}")
        for key, (dtype, dims) in layout.items():
            if key not in header:
                raise RunFolderError(f"{path}: no tensor {key!r}; {fmt}, whose shards hold {', '.join(layout)}; {REDO}")
            stored, shape = header[key]
            if stored != HEADER_DTYPES[dtype]:
                raise RunFolderError(f"{path}: tensor {key!r} is {stored}, {manifest} says {dtype} (format {self.manifest['format']}); {REDO}")
            if len(shape) != len(dims) or any(size is not None and size != n for n, (size, _) in zip(shape, dims)):
                expected = [size if size is not None else "any" for size, _ in dims]
                raise RunFolderError(f"{path}: tensor {key!r} has shape {shape}, expected {expected} "
                                     f"({' by '.join(what for _, what in dims)}); {REDO}")

    def get(self, example: AlignedExample) -> dict[str, torch.Tensor]:
        span = self.spans.get(example.id)
        if span is None or "shard" not in span:
            raise RunFolderError(f"{self.folder}: no stored targets for example {example.id!r}")
        if span["shard"] not in self._shards:
            try:
                self._shards[span["shard"]] = load_file(self.folder / span["shard"])
            except (SafetensorError, OSError) as exc:  # a truncated, damaged or missing shard
                raise RunFolderError(f"{self.folder / span['shard']}: teacher targets cannot be read ({exc}); "
                                     "recompute them with `ssb teacher --force`") from None
        shard, lo, n = self._shards[span["shard"]], span["start"], span["length"]
        if shard["solution_ids"][lo : lo + n].tolist() != example.solution_ids:
            raise RunFolderError(f"{self.folder}: stored solution ids of {example.id!r} differ from the tokenized solution")
        return {k: v[lo : lo + n] for k, v in shard.items() if k != "solution_ids"}


def open_targets(config: SSBConfig, folder: Path, model, tokenizer) -> TeacherTargets | None:
    """The stored targets in ``folder``, checked against this model and settings; None for format online.

    Called before training starts, so that targets made for something else are refused up front.
    """
    if config.teacher.format == "online":
        return None
    vocab_size, hidden_size = model.get_output_embeddings().weight.shape
    return TeacherTargets(folder, targets_identity(config, model, tokenizer), vocab_size, hidden_size)


class Teacher:
    """The teacher's distribution on solution tokens, for every ``teacher.format``: the one reader of targets.

    ``rows(group, device)`` gives the teacher's rows for a micro-batch's solution tokens (a dict of
    tensors with one row per token, in ``pack`` order); ``score(student_logits, rows, head_weight,
    targets)`` gives the KD term and the diagnostics of a chunk of student logits against the same
    chunk of those rows. Stored formats read the
    shards written by ``ssb teacher``; ``online`` runs the frozen base (adapters disabled) on the
    teacher view now and keeps its final hidden states, like ``hidden`` does on disk.
    """

    def __init__(self, config: SSBConfig, stored: TeacherTargets | None = None, model=None, pad_id: int | None = None):
        self.format, self.temperature, self.topk_tail = config.teacher.format, config.distill.temperature, config.distill.topk_tail
        self.direction, self.jsd_beta = config.distill.kd_direction, config.distill.jsd_beta
        self.stored, self.model, self.pad_id = stored, model, pad_id

    @staticmethod
    def rows_of_hidden_states(hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows of the hidden / online formats from the frozen model's final hidden states (N, H)."""
        return {"hidden": hidden}

    def rows(self, group: list[AlignedExample], device) -> dict[str, torch.Tensor]:
        if self.format == "online":
            if self.model is None or self.pad_id is None:
                raise ValueError("teacher.format online needs the PEFT model (its adapters are disabled for the teacher pass) and a pad id")
            with torch.no_grad(), self.model.disable_adapter():
                batch = pack([e.teacher_prompt_ids for e in group], [e.solution_ids for e in group], self.pad_id)
                return self.rows_of_hidden_states(solution_hidden_states(self.model, batch))  # (N, H)
        if self.stored is None:
            raise ValueError(f"teacher.format {self.format} reads stored targets; none were opened")
        per_example = [self.stored.get(e) for e in group]
        return {k: torch.cat([t[k] for t in per_example]).to(device) for k in per_example[0]}

    def logits(self, rows: dict[str, torch.Tensor], head_weight: torch.Tensor) -> torch.Tensor | None:
        """The teacher's full logits for a chunk of rows, (c, V); None for top-k targets, which keep only their top k."""
        if self.format in ("hidden", "online"):
            with torch.no_grad():
                return rows["hidden"].to(head_weight.dtype) @ head_weight.T  # exact up to the storage dtype (auto: exact)
        return rows["logits"] if self.format == "full" else None

    def score(self, student_logits: torch.Tensor, rows: dict[str, torch.Tensor], head_weight: torch.Tensor,
              target_ids: torch.Tensor) -> torch.Tensor:
        """(c, V) student logits against c teacher rows -> (c, 5): the KD term (``distill.kd_direction``), then
        teacher entropy, student entropy, teacher NLL of the solution token and top-1 agreement (``losses.token_diagnostics``)."""
        teacher_logits = self.logits(rows, head_weight)
        if teacher_logits is None:
            kd = kl_topk(student_logits, rows["topk_logits"], rows["topk_ids"], rows["log_normalizer"], self.temperature, self.topk_tail)
            diagnostics = token_diagnostics(student_logits.detach(), None, target_ids, teacher_top1=rows["topk_ids"][:, 0].long())
        else:
            kd = kd_full(student_logits, teacher_logits, self.temperature, self.direction, self.jsd_beta)
            diagnostics = token_diagnostics(student_logits.detach(), teacher_logits, target_ids)
        return torch.cat([kd[:, None], diagnostics], dim=-1)
