"""Iterated SSB (``rounds`` > 1): each round bootstraps from the model the previous round trained.

The paper trains once, from the base model's own mistakes. Here round r >= 2 repeats rollouts,
refine, teacher, distill and eval with round r-1's trained model as the policy *and* the teacher,
so its mixed questions, refinements and teacher targets are the improved model's own.

Folders. Round 1 is plain ``ssb run`` in the run folder itself: the same stages on the same config,
so its outputs are those of a run without rounds, byte for byte. Round r >= 2 is a run folder of
its own, ``RUN_DIR/round-r/``, with its own manifest, stats and report inputs; the stage functions
run unchanged on a derived config (run_dir the round's folder, model the round's model, data the
round's slice), so each round resumes and each finished stage is skipped like any stage.
``RUN_DIR/rounds.json`` lists the rounds: folder, model, the model and adapter it was merged from,
data slice, and why the run stopped early, if it did.

Merging, not stacking. Round r's model is round r-1's model with round r-1's LoRA adapter merged
into its weights (PEFT ``merge_and_unload``), saved once as a model folder ``round-r/model/`` with
the tokenizer, the same chat template and every stop token, and used as ``model.name_or_path`` of
round r. Every stage and every generation backend then runs unchanged: one model folder, one
template, one adapter trained and evaluated on top of it, exactly as in round 1. Stacking adapters
computes the same function (earlier adapters frozen, a new one trained on top) but would need every
backend (hf, the OpenVINO export, vLLM's LoRA) to apply several adapters at once, the teacher to
run with some enabled and the new one off, and every artifact to name a chain of adapters instead
of one model; with merging, round r's LoRA simply trains on the merged weights. The weights are
merged and stored in float32, the exact sum of base and adapter; the stages then load them in
``model.dtype`` as for any model. In bf16 that rounds each merged weight once, as it rounds the base
model's in round 1: the earlier rounds' updates then arrive in full on average but with rounding
noise (the evidence study's SSB adapter: noise 0.30 of the update's size overall, 0.14-0.83 per
matrix; ``studies/evidence/adapter_rounding.py``), as they do, more coarsely, in the OpenVINO engine's
int8 weights. ``model.dtype: float32`` keeps them exact, at float32 speed. The merge is written to
a staging folder and renamed into place, so an interrupted merge is redone, and it is recorded as
the ``merge`` entry of the round's manifest (the model and adapter it came from). A merged model folder
that was removed (each is a ~2 GB float32 copy for a 0.5B model) is merged again from the recorded adapter.
If round r-1's adapter changes after round r was built on it (a forced retrain), round r is stale
and the run stops, naming the folders to remove: the stage inputs of round r name its model folder,
not the weights inside it, so nothing downstream would notice a re-merge on its own.

Data. ``rounds_data: fresh`` (default) gives round r the next ``data.limit`` questions (data.offset
advanced by (r-1) x data.limit), so no round trains on questions an earlier round saw; ``same``
gives every round round 1's questions.

Evaluation. Every round evaluates its own adapter on top of its own base on the same held-out
questions (``config.eval``); round 1 also evaluates the original base model, the curve's round 0.
Rounds >= 2 do not evaluate their base: it is round r-1's evaluated model (merged instead of applied
as an adapter). A round whose refine keeps no solution (or too few to train on) stops the run (``ssb.pipeline.yield_shortfall``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import time
from pathlib import Path

from ssb.config import SSBConfig
from ssb.pipeline import run_stages, trained_model_name
from ssb.report import write_report
from ssb.runfolder.artifacts import RunFolderError, write_json_atomic, writing
from ssb.runfolder.file_modes import follow_umask
from ssb.runfolder.folder import RunFolder, describe_changes, invocation_stats
from ssb.runfolder.lock import hold_run_folder
from ssb.runfolder.record import ROUNDS_FILE

_log = logging.getLogger(__name__)


def round_folder(run_dir: str | Path, r: int) -> Path:
    """Round r's run folder: the run folder itself for round 1, ``round-r/`` inside it after."""
    return Path(run_dir) if r == 1 else Path(run_dir) / f"round-{r}"


def round_config(config: SSBConfig, r: int, model: str) -> SSBConfig:
    """Round r's config: its folder, ``model`` as policy and teacher, and its slice of the training questions."""
    if r == 1:
        return config
    offset = config.data.offset + (r - 1) * config.data.limit if config.rounds_data == "fresh" else config.data.offset
    return dataclasses.replace(config, run_dir=str(round_folder(config.run_dir, r)),
                               model=dataclasses.replace(config.model, name_or_path=model, revision=None),
                               data=dataclasses.replace(config.data, offset=offset))


def merge_round_model(previous: SSBConfig, into: Path) -> str:
    """The model of the round after ``previous``: its model with its adapter merged in, saved once in ``into/model``."""
    from ssb.evaluation import adapter_fingerprint

    folder = RunFolder(into)
    adapter = Path(previous.run_dir) / "distill" / "adapter"
    # What the merged weights depend on (the merge itself always runs in float32 on the CPU).
    source = {k: v for k, v in dataclasses.asdict(previous.model).items() if k in ("name_or_path", "revision", "chat_template", "trust_remote_code")}
    stage = folder.stage("merge", previous, model=source, adapter=str(adapter), adapter_sha256=adapter_fingerprint(str(adapter)))
    target, staging = folder.file("model"), folder.file(".model.staging")
    entry, recorded = folder.stage_entry("merge"), None
    if entry is not None:
        if entry["inputs"] != stage.inputs:
            raise RunFolderError(f"{into} was built on another model or adapter than the previous round's now; changed:\n  "
                                 + "\n  ".join(describe_changes(entry["inputs"], stage.inputs))
                                 + f"\nThis round and every later one are stale: remove {into} and the later round-* folders to redo them, "
                                 "or use another run_dir.")
        if target.exists():
            return str(target)
        # Merged from this very adapter, then removed (to save disk, or by a restore from committed results, which
        # hold no weights): merging again gives the same weights, so the rounds built on it stay valid; checked below.
        recorded = entry.get("merged_sha256")  # absent from merges recorded before it was
        _log.info("%s: merged before but gone; merging %s again", target, adapter)
    # Never merged, or interrupted: whatever an earlier attempt left (of this adapter or another) is discarded. Merged, then
    # removed: the entry stays until the new merge replaces it, so a merge that comes out otherwise keeps the first's record.
    stage.begin(force=entry is None)
    start = time.monotonic()
    _save_merged(previous, adapter, staging)
    staging.rename(target)
    merged = weights_sha256(target)
    if recorded is not None and merged != recorded:
        shutil.rmtree(target)
        raise RunFolderError(f"{target}: merged again from the recorded adapter, but into other weights (sha256 {merged}, recorded {recorded}; "
                             f"another torch or peft?). The rounds built on it were not: remove {into} and the later round-* folders "
                             "to redo them, or merge with the versions in its manifest entry.")
    stage.finish({"model": previous.model.name_or_path, "adapter": str(adapter), "merged_into": str(target), "dtype": "float32",
                  "merged_sha256": merged}, {"this_invocation": invocation_stats(time.monotonic() - start)})
    return str(target)


def weights_sha256(model_dir: Path) -> str:
    """Hash of a model folder's weights (every safetensors shard, in name order)."""
    digest = hashlib.sha256()
    for shard in sorted(model_dir.glob("*.safetensors")):
        with open(shard, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()[:16]


def _save_merged(previous: SSBConfig, adapter: Path, staging: Path) -> None:
    from ssb.lora import load_adapter
    from ssb.models import load_chat_format, load_model

    shutil.rmtree(staging, ignore_errors=True)
    model = load_model(dataclasses.replace(previous.model, dtype="float32", device="cpu"))
    merged = load_adapter(model, adapter).merge_and_unload()
    chat = load_chat_format(previous.model)
    # Packaged models' extra stop tokens come from ssb's table of packaged names, which the merged folder
    # is not: its generation config carries them all, so generation stops exactly where it did.
    merged.generation_config.eos_token_id = list(chat.stop_ids)
    with writing(staging):
        merged.save_pretrained(staging)
        chat.tokenizer.save_pretrained(staging)  # with model.chat_template applied, if one was set
        follow_umask(staging)
    _log.info("merged %s into %s -> %s", adapter, previous.model.name_or_path, staging.parent / "model")


def run_rounds(config: SSBConfig, force: set[str], backend=None) -> dict:
    """Rounds 1..``config.rounds`` in turn, each finished one skipped; then the report with the per-round curve."""
    record = {"rounds": config.rounds, "rounds_data": config.rounds_data, "per_round": [], "stopped": None}
    results, current = [], config
    for r in range(1, config.rounds + 1):
        started_from = {"model": config.model.name_or_path, "adapter": None}
        # A round folder is a run folder of its own: held while its round runs, so no command on it runs meanwhile.
        with hold_run_folder(round_folder(config.run_dir, r)):
            if r > 1:
                started_from = {"model": current.model.name_or_path, "adapter": str(Path(current.run_dir) / "distill" / "adapter")}
                current = round_config(config, r, merge_round_model(current, round_folder(config.run_dir, r)))
            record["per_round"].append({"round": r, "folder": "." if r == 1 else f"round-{r}", "model": current.model.name_or_path,
                                        "started_from": started_from, "data": {"offset": current.data.offset, "limit": current.data.limit},
                                        "evaluated": trained_model_name(current)})
            write_json_atomic(Path(config.run_dir) / ROUNDS_FILE, record)
            _log.info("=== round %d of %d (%s)", r, config.rounds, current.run_dir)
            outcome = run_stages(current, force, backend, with_base=r == 1)
        results.append({"round": r, "wall_s": outcome["wall_s"], "pass@1": outcome["pass@1"]})
        if outcome["stopped"]:
            record["stopped"] = f"round {r}: {outcome['stopped']}"
            break
    write_json_atomic(Path(config.run_dir) / ROUNDS_FILE, record)
    report = write_report(config.run_dir)
    stopped = {"stopped": record["stopped"]} if record["stopped"] else {}
    return {"rounds": results, **stopped, "report": str(report)}
