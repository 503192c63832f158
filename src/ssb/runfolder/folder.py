"""A run folder: where every stage reads its inputs and writes its outputs.

A stage's life is one mechanism, ``RunFolder.stage`` -> ``StageRun``: the stage table
(``ssb.runfolder.stages``) says which upstream stage must have finished and which inputs the stage records
(whole config sections through ``section_inputs``, so a new config field is recorded by every stage
that reads its section). Each stage records what it was started with (``.ssb/<stage>.json``)
before writing anything. Re-running the stage with the same
inputs resumes it; with different inputs it stops and lists what changed, unless told to
``force`` a restart, which removes that stage's outputs first. When a stage completes it adds its
entry to ``manifest.json`` (written last, atomically) and its counts to ``stats.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import ssb
from ssb.runfolder.artifacts import (
    RunFolderError,
    changed_since,
    check_no_links,
    command_line,
    digest_problem,
    file_digest,
    fingerprint,
    package_versions,
    read_json_file,
    text_sha256,
    utc_now,
    write_json_atomic,
)
from ssb.runfolder.stages import Stage, stage_named

_log = logging.getLogger(__name__)

# Bumped whenever a run folder's layout or a record's schema changes incompatibly.
# 2: every stage's timing in stats["this_invocation"]; synthetic problems drawn differently (disjoint splits).
RUN_FOLDER_VERSION = 2

def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def section_inputs(section) -> dict:
    """A config section (a dataclass, nested ones included) as every stage's inputs record it: each field, except
    those declared ``stage_input=False``, and those declared ``added_later`` while at their default (so that a folder
    made before such a field existed, which ran as its default does, stays finished). See ``ssb.config.doc``."""
    recorded = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if not f.metadata.get("stage_input", True):
            continue
        if f.metadata.get("added_later") and value == (f.default_factory() if f.default is dataclasses.MISSING else f.default):
            continue
        recorded[f.name] = section_inputs(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return recorded


def config_part(config, name: str):
    """One named part of a stage's recorded inputs (the names of ``ssb.runfolder.stages.Stage.records``), from the config."""
    from ssb.prompts import load_prompts

    if name == "lora":  # the one adapter shape of every trained arm (ssb.lora)
        return section_inputs(config.distill.lora)
    section = getattr(config, name, None)
    if dataclasses.is_dataclass(section):  # a config section by its name: model, data, rollouts, ..., a new arm's own
        return section_inputs(section)
    if name == "seed":
        return config.seed
    if name in ("system_prompt_sha256", "hinted_prompt_sha256"):
        prompts = load_prompts(config.prompts.system, config.prompts.hinted)
        return text_sha256(prompts.system if name == "system_prompt_sha256" else prompts.hinted_template)
    raise KeyError(name)


def model_provenance(config, tokenizer) -> dict:
    """What a stage's outputs depend on besides its config: model, tokenizer, grader, seed, and the machine (device, and
    the CPU's model and kernel flags: the same engine settings generate other text on another CPU class)."""
    from ssb.chat import tokenizer_hash
    from ssb.generation import backend_spec
    from ssb.grading import GRADER_VERSION
    from ssb.models import cpu_record, dtype_choice, resolve_device

    device = resolve_device(config.model)
    dtype, why = dtype_choice(config.model, device)
    engine = backend_spec(config)
    if engine["name"] == "openvino":  # why the precision that ran was chosen, as for the torch dtype
        from ssb.generation.openvino import precision_choice

        engine = {**engine, "inference_precision_reason": precision_choice(config.backend.openvino.inference_precision)[1]}
    return {"model": config.model.name_or_path, "model_revision": config.model.revision,
            "tokenizer_hash": tokenizer_hash(tokenizer), "seed": config.seed, "grader": GRADER_VERSION,
            "torch_dtype": str(dtype).removeprefix("torch."), "torch_dtype_reason": why, "generation_backend": engine,
            "device": device.type, "cpu": cpu_record()}


def invocation_stats(wall_s: float, generated_tokens: int | None = None) -> dict:
    """The one timing shape of every stage: ``stats["this_invocation"]``, this invocation's wall time (and generation rate)."""
    stats: dict = {"wall_s": round(wall_s, 2)}
    if generated_tokens is not None:
        stats["generated_tokens"] = generated_tokens
        stats["tokens_per_s"] = round(generated_tokens / wall_s, 2) if wall_s > 0 else None
    return stats


def describe_changes(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every leaf that differs."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class StageRun:
    """One stage's life in a run folder: its recorded inputs, then ``begin`` (or a skip when it finished with them),
    then ``finish``. Made by ``RunFolder.stage``, from the stage table.

    ``finish`` records the size and sha256 of the stage's outputs (the table's ``verified``) and of the files it read
    from elsewhere (``reads``: an evaluated adapter); a skip verifies them, and so does every later stage that reads
    them (``RunFolder.stage``), so a damaged or edited file is named instead of consumed."""

    def __init__(self, folder: RunFolder, name: str, inputs: dict, outputs: list[str], verified: list[str]):
        self.folder, self.name, self.inputs, self.outputs, self.verified = folder, name, inputs, outputs, verified

    def finished(self) -> bool:
        """Whether the stage completed with exactly these inputs and its outputs are as it left them (what ``begin`` skips);
        touches nothing, and raises RunFolderError naming a damaged output."""
        if not self.folder._finished_with(self.name, self.inputs):
            return False
        self.folder.verify(self.name)
        return True

    def begin(self, force: bool = False) -> bool:
        """Prepare the stage; False when it already completed with these inputs (nothing to do). Changed inputs are
        refused with the list of changes; ``force`` always discards its outputs and starts it again."""
        if not force and self.finished():
            return False
        return self.folder._begin(self.name, self.inputs, force, self.outputs)

    def stats(self) -> dict:
        """The stats it recorded when it finished."""
        return self.folder.stats()[self.name]

    def finish(self, entry: dict, stats: dict, reads: list[Path] = ()) -> None:
        """Record ``stats`` and then the manifest entry (``entry`` + inputs, versions, command, times, the digests of its
        outputs and of ``reads``), written last."""
        outputs = {rel: file_digest(self.folder.file(rel)) for rel in verified_files(self.folder.path, self.verified)}
        recorded = {**entry, "outputs": outputs, **({"reads": {str(p): file_digest(Path(p)) for p in reads}} if reads else {})}
        self.folder._finish(self.name, self.inputs, recorded, stats)


def verified_files(root: Path, names: list[str]) -> list[str]:
    """The files (relative to ``root``, sorted) that ``names`` (files or folders) hold now; hidden staging files left out."""
    found = []
    for name in names:
        path = root / name
        if path.is_file():
            found.append(name)
        elif path.is_dir():
            found += [p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(found)


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def stage(self, stage: str, config, key: str | None = None, **supplied: Any) -> StageRun:
        """Stage ``stage`` of the stage table (``ssb.runfolder.stages``) in this folder under ``config``: its upstream stage must
        have finished (else a RunFolderError says which to run), and its inputs are the parts its table entry records,
        in that order: the upstream stage's inputs fingerprint, parts of the config, and the parts the stage supplies
        (``supplied``: exactly the ones the config does not give). ``key`` names one of several stages of a keyed kind
        (eval: ``<model>/<benchmark>``, the stage ``eval/<model>/<benchmark>``)."""
        entry: Stage = stage_named(stage)
        name = stage if key is None else f"{stage}/{key}"
        upstream = entry.upstream_of(config)
        inputs: dict[str, Any] = {}
        for part in entry.records:
            if part == "upstream":
                if upstream is None:  # this config reads no upstream stage (onpolicy with a context from the data)
                    continue
                inputs[entry.upstream_key] = self.require_finished(upstream, needed_by=stage)["inputs_fingerprint"]
                self.verify(upstream)  # what this stage is about to read is what the upstream stage wrote
            elif part == "objective":
                from ssb.objectives import objective_for

                inputs.update(objective_for(config).recorded_inputs())
            elif part in supplied:
                inputs[part] = supplied[part]
            else:
                try:
                    inputs[part] = config_part(config, part)
                except KeyError:
                    raise ValueError(f"stage {stage!r} records {part!r}, which the config does not give and the stage did not supply") from None
        unknown = set(supplied) - set(entry.records)
        if unknown:
            raise ValueError(f"stage {stage!r} was given {', '.join(sorted(unknown))}, which its table entry does not record")
        outputs = [pattern.format(key=key) for pattern in entry.keyed_outputs] if key is not None else list(entry.outputs)
        return StageRun(self, name, inputs, outputs, outputs if entry.verified is None else list(entry.verified))

    def file(self, name: str) -> Path:
        return self.path / name

    def stats(self) -> dict:
        path = self.file("stats.json")
        return read_json_file(path) if path.exists() else {}

    def _state_file(self, stage: str) -> Path:
        return self.path / ".ssb" / f"{stage}.json"

    def _state(self, stage: str) -> dict:
        """What ``stage`` was started with (``.ssb/<stage>.json``), checked as it is read."""
        state = read_json_file(self._state_file(stage))
        if not isinstance(state.get("inputs"), dict) or not isinstance(state.get("started"), str):
            raise RunFolderError(f"{self._state_file(stage)}: records no inputs and start time; remove it and redo the stage: "
                                 f"ssb {stage.split('/')[0]} --force")
        return state

    def manifest(self) -> dict:
        path = self.file("manifest.json")
        if not path.exists():
            return {"run_folder_version": RUN_FOLDER_VERSION, "stages": {}}
        manifest = read_json_file(path)
        found = manifest.get("run_folder_version")
        if found != RUN_FOLDER_VERSION:
            raise RunFolderError(f"{self.path}: made by ssb {manifest.get('ssb_version', '?')} with run-folder format {found}; "
                                 f"this ssb {ssb.__version__} reads format {RUN_FOLDER_VERSION}. Use a new run_dir.")
        return manifest

    def stage_entry(self, stage: str) -> dict | None:
        return self.manifest()["stages"].get(stage)

    def _begin(self, stage: str, inputs: dict, force: bool, outputs: list[str]) -> bool:
        """Prepare ``stage`` with ``inputs``; returns False when it already completed with them.
        ``outputs`` are the files a forced restart removes. (Stages go through ``StageRun``.)"""
        self.manifest()  # refuses a folder written by an incompatible version before touching it
        check_no_links(self.path)  # before the stage writes anything
        state_file = self._state_file(stage)
        if force:
            _log.warning("--force: stage '%s' starts again from scratch", stage)
            self._discard(stage, outputs)
        elif state_file.exists():
            recorded = self._state(stage)["inputs"]
            if recorded != inputs:
                changes = describe_changes(recorded, inputs)
                raise RunFolderError(
                    f"{self.path}: stage '{stage}' was started with other inputs; changed:\n  "
                    + "\n  ".join(changes)
                    + "\nRe-run with --force to discard its outputs and start it again, or use another run_dir."
                )
            if self._finished_with(stage, inputs):
                return False
        if not state_file.exists():
            write_json_atomic(state_file, {"inputs": inputs, "started": utc_now()})
        return True

    def _finished_with(self, stage: str, inputs: dict) -> bool:
        """Whether ``stage`` completed with exactly ``inputs`` (what ``_begin`` skips), touching nothing."""
        state_file = self._state_file(stage)
        return (state_file.exists() and self._state(stage)["inputs"] == inputs
                and (self.stage_entry(stage) or {}).get("inputs_fingerprint") == fingerprint(inputs))

    def _discard(self, stage: str, outputs: list[str]) -> None:
        for name in outputs:
            path = self.file(name)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self._state_file(stage).unlink(missing_ok=True)
        manifest = self.manifest()
        if manifest["stages"].pop(stage, None) is not None:
            write_json_atomic(self.file("manifest.json"), manifest)

    def started_at(self, stage: str) -> str:
        return self._state(stage)["started"]

    def record_stop(self, reason: str | None) -> None:
        """Keep why the method stopped after refine in refine's stats ("stopped"), so that a report made from
        the folder alone can say it; None clears it, for a run that went on."""
        all_stats = self.stats()
        refine = all_stats["refine"]
        if refine.get("stopped") == reason:
            return
        if reason is None:
            del refine["stopped"]
        else:
            refine["stopped"] = reason
        write_json_atomic(self.file("stats.json"), all_stats)

    def _finish(self, stage: str, inputs: dict, entry: dict, stats: dict) -> None:
        """Record ``stats`` and then the manifest entry: the stage's completion marker, written last."""
        all_stats = self.stats()
        all_stats[stage] = stats
        write_json_atomic(self.file("stats.json"), all_stats)
        manifest = self.manifest()
        manifest["ssb_version"] = ssb.__version__
        manifest["run_folder_version"] = RUN_FOLDER_VERSION
        manifest["run_dir"] = str(self.path)  # as the config spells it: which run an export is of (ssb.runfolder.export)
        manifest["stages"][stage] = {
            **entry,
            "inputs": inputs,
            "inputs_fingerprint": fingerprint(inputs),
            "package_versions": package_versions(),
            "command": command_line(),
            "started": self.started_at(stage),
            "finished": utc_now(),
        }
        write_json_atomic(self.file("manifest.json"), manifest)

    def verify(self, stage: str) -> None:
        """Check that the files a finished stage recorded (its outputs; what it read from elsewhere) are as it left them:
        a RunFolderError names the first that is missing or changed and how to redo the stage. Entries made before ssb
        recorded digests carry none and pass."""
        entry = self.stage_entry(stage) or {}
        recorded = [(self.file(rel), d, "wrote") for rel, d in entry.get("outputs", {}).items()]
        recorded += [(Path(path), d, "read") for path, d in entry.get("reads", {}).items()]
        for path, digest, how in recorded:
            problem = digest_problem(path, digest)
            if problem is not None:
                raise RunFolderError(changed_since(path, problem, stage, how, self.path))

    def require_finished(self, stage: str, needed_by: str) -> dict:
        entry = self.stage_entry(stage)
        if entry is None:
            raise RunFolderError(f"{self.path}: stage '{needed_by}' needs '{stage}' to have finished first (no manifest entry); run `ssb {stage}`")
        return entry

