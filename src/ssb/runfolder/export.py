"""Export a run folder's results into a folder of compressed files, and rebuild a run folder from one, so that a run
outlasts the machine it started on (``ssb export RUN_DIR OUT_DIR``, ``ssb restore EXPORT_DIR RUN_DIR``).

An export holds everything a run's numbers rest on and no weights:

    OUT_DIR/report.md, *.png                                     the run's report and its plots (accuracy, comparisons, training, rounds)
    OUT_DIR/rounds.json                                          an iterated run's list of rounds (none for a plain run)
    OUT_DIR/round-1/                                             the run folder's own stages (a plain run is round 1 alone)
        rollouts, refinements, teacher, student, dropped .jsonl.gz   the training data (a journal under way as far as it got)
        stats.json, manifest.json                                    what each finished stage counted and was made from
        state/<stage>.json                                           each stage's recorded inputs (``.ssb/`` in the run folder)
        distill/, grpo/, onpolicy/ metrics.jsonl.gz                 per-step training metrics
        eval/<model>/<benchmark>.samples.jsonl.gz, .summary.json     every evaluation's samples and summary
    OUT_DIR/round-r/                                             RUN_DIR/round-r/ of an iterated run, laid out as round-1/

Same content, same bytes: JSON files are copied as they are, and a gzip header carries no time and names only the
file. An export may be taken while the run goes on (a stage under way is exported as far as it got) and into an
earlier export of the same run, which it brings up to date; it never goes back (``export_round``).

Not exported: teacher targets, trained adapters and merged models (gigabytes, and recomputable). A restore leaves
the stages that wrote them (``NOT_EXPORTED``) out of the manifest, so ``ssb run`` with the run's config trains them
again, and keeps every other stage's manifest entry and recorded inputs, so it skips what had finished and resumes
a journal under way chunk by chunk. An iterated round's ``merge`` is kept, so it is redone from the adapter it
recorded; a merge and every evaluation record their adapter's sha256, so a retraining that comes out otherwise
(another CPU, other kernels) stops the run naming the change rather than going on from a model the exported numbers
did not come from. The recorded inputs name the run folder's models by path, so a restore goes only to the folder
the export was made from (the same path, as the run's ``run_dir`` spells it), and only into a new one.

An export is read as data: JSON and gzip only, and every name that becomes a path in the rebuilt folder (a round's
folder, a stage's name) is checked to stay inside it.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

from ssb.evaluation import adapter_fingerprint
from ssb.runfolder.artifacts import bytes_problem, check_no_links, open_for_writing, refuse_link, writing
from ssb.runfolder.file_modes import umask_mode
from ssb.runfolder.record import ROUNDS_FILE
from ssb.runfolder.stages import BY_NAME

_log = logging.getLogger(__name__)

TRAINING_DATA = ("rollouts.jsonl", "refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl")
REPORT_FILES = (ROUNDS_FILE, "report.md", "rounds.png", "accuracy.png", "comparisons.png", "training.png")  # report.md links the plots
METRICS = ("distill/metrics.jsonl", "grpo/metrics.jsonl", "onpolicy/metrics.jsonl")
NOT_EXPORTED = ("teacher", "distill", "grpo", "onpolicy")  # stages whose outputs are weights: they run again


class RunExportError(ValueError):
    """A run folder that cannot be exported, or an export that cannot be restored; the message names the file at fault."""


def checked_bytes(source: Path, digest: dict | None) -> bytes:
    """The bytes of ``source``, which must be those its finished stage recorded (``digest``) when it recorded them: an
    export carries what the run's numbers rest on, not a file edited since."""
    data = source.read_bytes()
    if digest is not None and (problem := bytes_problem(data, digest)) is not None:
        raise RunExportError(f"{source}: has changed since the stage that wrote it finished (it {problem}, by the size and sha256 "
                             "manifest.json records); put the file back, or redo the stage (ssb STAGE --force), then export again")
    return data


def gzip_copy(source: Path, target_dir: Path, digest: dict | None = None) -> None:
    target = target_dir / f"{source.name}.gz"
    buffer = io.BytesIO()
    # The header names the target (as gzip.open(target) would): the same bytes for the same content, export after export.
    with gzip.GzipFile(str(target), "wb", 9, buffer, mtime=0) as g:
        g.write(checked_bytes(source, digest))
    write_bytes(target, buffer.getvalue())


def plain_copy(source: Path, target_dir: Path, name: str | None = None, digest: dict | None = None) -> None:
    write_bytes(target_dir / (name or source.name), checked_bytes(source, digest))


def write_bytes(target: Path, data: bytes) -> None:
    """Write ``target`` under a staging name, then rename it into place (a killed export or restore leaves no cut-off
    file); never through a link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    refuse_link(target)
    partial = target.with_name(target.name + ".partial")
    with writing(target), os.fdopen(open_for_writing(partial), "wb") as f:
        f.write(data)
    os.replace(partial, target)


def gunzip(source: Path, target: Path) -> None:
    """Decompress ``source`` into ``target`` block by block (a journal may be far larger than memory), under a staging
    name, never through a link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    refuse_link(target)
    partial = target.with_name(target.name + ".partial")
    with gzip.open(source, "rb") as f, os.fdopen(open_for_writing(partial), "wb") as out:
        while True:
            try:
                block = f.read(1 << 22)
            except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off file an EOFError
                raise RunExportError(f"{source}: not a whole gzip file ({exc or type(exc).__name__}); export the run again") from None
            if not block:
                break
            with writing(target):
                out.write(block)
    os.replace(partial, target)


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting past the parser's depth
        raise RunExportError(f"{path}: not a JSON file ({'nested too deep' if isinstance(exc, RecursionError) else exc})") from None
    if not isinstance(value, dict):
        raise RunExportError(f"{path}: not a JSON object")
    return value


def round_folders(rounds_file: Path) -> list[tuple[int, str]]:
    """(round, its folder inside the run folder) for each round ``rounds_file`` lists: 1 and ".", then r and "round-r"
    (``ssb.rounds``), nothing else, so that no folder named there leads outside the run folder."""
    per_round = read_json(rounds_file).get("per_round")
    if not isinstance(per_round, list):
        raise RunExportError(f"{rounds_file}: no list of rounds (per_round)")
    listed = []
    for r, entry in enumerate(per_round, start=1):
        folder = "." if r == 1 else f"round-{r}"
        if not isinstance(entry, dict) or entry.get("round") != r or entry.get("folder") != folder:
            found = (entry.get("round"), entry.get("folder")) if isinstance(entry, dict) else entry
            raise RunExportError(f"{rounds_file}: round {r} must be listed as round {r} in folder {folder!r}, not {found!r}")
        listed.append((r, folder))
    return listed


def run_rounds(run_dir: Path) -> list[tuple[int, str]]:
    """The rounds of a run folder: its rounds.json's, or round 1 alone (the folder itself) for a plain run."""
    return round_folders(run_dir / ROUNDS_FILE) if (run_dir / ROUNDS_FILE).exists() else [(1, ".")]


def check_stage_name(stage: str, where: Path) -> None:
    """A stage's name (a manifest key, a state file) becomes ``.ssb/<stage>.json``: a stage of the table (``ssb.runfolder.stages``),
    with a key of plain names for a keyed one (``eval/<model>/<benchmark>``)."""
    kind, _, key = stage.partition("/")
    parts = key.split("/") if key else []
    entry = BY_NAME.get(kind)
    plain = all(part not in ("", ".", "..") and "\\" not in part and "\0" not in part for part in parts)
    if entry is None or not plain or bool(parts) != bool(entry.keyed_outputs):
        raise RunExportError(f"{where}: {stage!r} is not the name of a stage ({', '.join(BY_NAME)}; eval/<model>/<benchmark>)")


# Export


def stages_of(manifest: bytes | None, path: Path) -> dict:
    """The stage entries of ``manifest`` (the bytes of ``path``, None when there is none)."""
    if not manifest:
        return {}
    try:
        stages = json.loads(manifest).get("stages")
    except (ValueError, RecursionError, AttributeError):
        stages = None
    if not isinstance(stages, dict) or not all(isinstance(entry, dict) for entry in stages.values()):
        raise RunExportError(f"{path}: not a manifest ssb wrote (a JSON object whose stages are objects); put it back, or redo the run")
    return stages


def recorded_digests(stages: dict) -> dict[str, dict]:
    """{file inside the folder: its size and sha256} as the finished stages of a manifest recorded them."""
    return {rel: digest for entry in stages.values() for rel, digest in (entry.get("outputs") or {}).items()}


def run_identity(manifest: bytes | None, states: dict[str, bytes], where: Path) -> tuple[str | None, dict[str, str], str | None]:
    """What tells one run from another, from round 1's manifest and recorded stage states: the run folder its stages
    were run in (as the config spelled it), when each stage was started ({state file: start time}) and the folder its
    trained adapter was made in (None where nothing records them: folders made before ssb recorded run_dir)."""
    stages = stages_of(manifest, where.parent / "manifest.json")
    run_dir = json.loads(manifest).get("run_dir") if manifest else None
    started = {}
    for name, data in states.items():
        try:
            started[name] = json.loads(data)["started"]
        except (ValueError, RecursionError, KeyError, TypeError):
            raise RunExportError(f"{where / name}: not a stage state ssb wrote (JSON with its start time)") from None
    adapters = sorted(entry["adapter"] for stage, entry in stages.items() if stage in NOT_EXPORTED and isinstance(entry.get("adapter"), str))
    return run_dir if isinstance(run_dir, str) else None, started, adapters[0] if adapters else None


def stage_states(folder: Path) -> dict[str, bytes]:
    """{stage name with .json: what it was started with} of a folder of stage states (``.ssb/`` or an export's ``state/``)."""
    return {state.relative_to(folder).as_posix(): state.read_bytes() for state in sorted(folder.glob("**/*.json"))}


def read_if_there(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def listed_rounds(folder: Path) -> int:
    return len(run_rounds(folder)) if (folder / ROUNDS_FILE).exists() else 0


def stale_evaluations(folder: Path, stages: dict) -> list[str]:
    """Evaluations recorded for this folder's adapter whose sha256 is not the adapter's there now (retrained otherwise)."""
    adapter = folder / "distill" / "adapter"
    now = adapter_fingerprint(str(adapter))
    return [stage for stage, entry in stages.items() if stage.startswith("eval/") and entry["inputs"]["model"]["adapter_sha256"] is not None
            and Path(entry["inputs"]["model"]["adapter"]) == adapter and entry["inputs"]["model"]["adapter_sha256"] != now]


def export_round(folder: Path, out: Path) -> str | None:
    """One round's folder, as a snapshot that may be taken while its run goes on; None when exported, else why not.

    The manifest (and then stats and stage states) is read first and written last: a stage it lists as finished
    has its journal complete in the export, whatever finished meanwhile, and an export killed part-way leaves the
    journals ahead of the manifest, never behind (journals only grow).
    """
    manifest, stats = read_if_there(folder / "manifest.json"), read_if_there(folder / "stats.json")
    exported = stages_of(read_if_there(out / "manifest.json"), out / "manifest.json")
    finished = stages_of(manifest, folder / "manifest.json")
    # A run rebuilt from this export retrains what the export finished: until it has, the folder holds less than the
    # export, which keeps what it has (an export never goes back). Nor does it take a retraining that came out
    # otherwise than the adapter the exported evaluations were made with.
    missing = sorted(set(exported) - set(finished))
    stale = stale_evaluations(folder, finished)
    if missing or stale:
        return f"not finished (again) yet: {', '.join(missing)}" if missing else f"the adapter is not the one of {', '.join(stale)}"
    # What each stage was started with (finished or not): the restore gives it back, so that a stage exported
    # mid-way resumes from its exported journal instead of starting again.
    states = stage_states(folder / ".ssb")
    # A finished stage's files go out only as it recorded them (a journal under way has no digest yet).
    digests = recorded_digests(finished)
    for file in TRAINING_DATA:
        if (folder / file).exists():
            gzip_copy(folder / file, out, digests.get(file))
    for metrics in METRICS:
        if (folder / metrics).exists():
            gzip_copy(folder / metrics, (out / metrics).parent, digests.get(metrics))
    for samples in sorted((folder / "eval").glob("*/*.samples.jsonl")):
        gzip_copy(samples, out / "eval" / samples.parent.name, digests.get(samples.relative_to(folder).as_posix()))
        summary = samples.with_name(samples.name.replace(".samples.jsonl", ".summary.json"))
        if summary.exists():  # an evaluation under way has its samples so far and no summary yet
            plain_copy(summary, out / "eval" / samples.parent.name, digest=digests.get(summary.relative_to(folder).as_posix()))
    for path, data in states.items():
        write_bytes(out / "state" / path, data)
    for name, data in (("stats.json", stats), ("manifest.json", manifest)):
        if data is not None:
            write_bytes(out / name, data)
    return None


def check_export_target(run_dir: Path, out_dir: Path) -> None:
    """``out_dir`` is a new folder, or an export (of this run, as far as names tell), apart from the run folder."""
    if not run_dir.is_dir():
        raise RunExportError(f"{run_dir}: no such run folder")
    if not any((run_dir / name).exists() for name in ("manifest.json", ".ssb", ROUNDS_FILE)):
        raise RunExportError(f"{run_dir}: not a run folder (no manifest.json, .ssb/ or {ROUNDS_FILE}); no stage has run there")
    run, out = run_dir.resolve(), out_dir.resolve()
    if run == out or run in out.parents or out in run.parents:
        raise RunExportError(f"{out_dir}: an export goes into a folder apart from the run folder {run_dir}, not inside it or around it")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunExportError(f"{out_dir}: not a folder")
    foreign = sorted(path.name for path in out_dir.iterdir() if path.name.removesuffix(".partial") not in REPORT_FILES
                     and not (path.name.startswith("round-") and path.name[6:].isdigit())) if out_dir.exists() else []
    if foreign:
        raise RunExportError(f"{out_dir}: holds {', '.join(foreign)}, which no export writes; export into a new folder "
                             "or into an earlier export of this run")
    check_no_links(run_dir)  # an export carries the run folder's own files, nothing a link leads to
    if out_dir.exists():
        check_no_links(out_dir)
    check_same_run(run_dir, out_dir / "round-1")


def check_same_run(run_dir: Path, exported: Path) -> None:
    """Refuse an ``exported`` round 1 made from another run than ``run_dir``'s (an export would replace its files)."""
    if not (exported / "manifest.json").exists() and not (exported / "state").is_dir():
        return
    ours_dir, ours_started, ours_trained = run_identity(read_if_there(run_dir / "manifest.json"), stage_states(run_dir / ".ssb"),
                                                        run_dir / ".ssb")
    theirs_dir, theirs_started, theirs_trained = run_identity(read_if_there(exported / "manifest.json"), stage_states(exported / "state"),
                                                              exported / "state")
    common = sorted(ours_started.keys() & theirs_started.keys())
    # A run keeps the folder its manifest names (a restore goes only there), its stages' start times (a restore gives them
    # back; --force restarts one, not all) and its adapter's folder: another run, even one copied from the same phase 1,
    # differs in one of them once a stage of its own has finished.
    differ = []
    if ours_dir is not None and theirs_dir is not None and ours_dir != theirs_dir:
        differ.append(f"run in {theirs_dir} there, {ours_dir} here")
    if common and all(ours_started[name] != theirs_started[name] for name in common):
        differ.append(f"stage {common[0].removesuffix('.json')} started {theirs_started[common[0]]} there, {ours_started[common[0]]} here")
    if ours_trained is not None and theirs_trained is not None and ours_trained != theirs_trained:
        differ.append(f"trained in {theirs_trained} there, {ours_trained} here")
    if differ:
        raise RunExportError(f"{exported.parent}: holds the export of another run ({'; '.join(differ)}); export into a new folder, "
                             "or into an earlier export of this run")


def export_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, list[str]]:
    """Export run folder ``run_dir`` (plain or iterated) into ``out_dir``, or bring an earlier export of it there up to
    date; returns {exported round folder: the stages it lists as finished}. A round the export cannot take now (its
    folder holds less than the export, after a restore) is left as it was, with a warning saying why."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_export_target(run_dir, out_dir)
    rounds = run_rounds(run_dir)
    if listed_rounds(run_dir) >= listed_rounds(out_dir):  # run_rounds lists a round when it starts it
        for file in REPORT_FILES:
            if (run_dir / file).exists():
                plain_copy(run_dir / file, out_dir)
    exported = {}
    for r, folder in rounds:
        target = out_dir / f"round-{r}"
        why_not = export_round(run_dir / folder, target)
        if why_not is None:
            exported[target.name] = sorted(stages_of(read_if_there(target / "manifest.json"), target / "manifest.json"))
        else:
            _log.warning("%s: not exported to %s; %s", run_dir / folder, target, why_not)
    return exported


# Restore


def restored_stage(stage: str) -> bool:
    return stage not in NOT_EXPORTED


def write_json(path: Path, value) -> None:
    write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def recorded_run_dir(export_dir: Path, rounds: list[tuple[int, str]]) -> str | None:
    """The folder the export was made from, as its recorded inputs name it: round 2's model path, else the path of
    round 1's trained adapter (None when nothing recorded names it: then no stage depends on where it is)."""
    if len(rounds) > 1:
        where, model = export_dir / ROUNDS_FILE, read_json(export_dir / ROUNDS_FILE)["per_round"][1].get("model")
    else:
        where = export_dir / "round-1" / "manifest.json"
        stages = read_json(where).get("stages", {}) if where.exists() else {}
        adapters = [entry.get("adapter") for stage, entry in stages.items() if stage in NOT_EXPORTED and isinstance(entry, dict)]
        model = next((adapter for adapter in adapters if adapter is not None), None)
        if model is None:
            return None
    if not isinstance(model, str):
        raise RunExportError(f"{where}: the recorded model path is {model!r}, not a path")
    return str(Path(model).parent.parent)


def stage_of(output: str) -> str:
    """The stage that writes an exported file (a path inside the round folder, without .gz)."""
    if output.startswith("eval/"):
        return output.removesuffix(".samples.jsonl").removesuffix(".summary.json")
    return "rollouts" if output == "rollouts.jsonl" else "refine"


def restore_round(source: Path, target: Path) -> list[str]:
    """One round's folder from its export; returns the stages given back."""
    manifest = read_json(source / "manifest.json") if (source / "manifest.json").exists() else None
    stats = read_json(source / "stats.json") if (source / "stats.json").exists() else {}
    states = {path.relative_to(source / "state").with_suffix("").as_posix(): read_json(path) for path in sorted(source.glob("state/**/*.json"))}
    for stage, state in states.items():
        check_stage_name(stage, source / "state" / f"{stage}.json")
        if "inputs" not in state:
            raise RunExportError(f"{source / 'state' / f'{stage}.json'}: records no inputs")
    if manifest is not None:
        if not isinstance(manifest.get("stages"), dict):
            raise RunExportError(f"{source / 'manifest.json'}: no stages")
        for stage, entry in manifest["stages"].items():
            check_stage_name(stage, source / "manifest.json")
            if not isinstance(entry, dict) or not {"inputs", "started"} <= set(entry):
                raise RunExportError(f"{source / 'manifest.json'}: the entry of stage {stage!r} records no inputs")
        manifest["stages"] = {stage: entry for stage, entry in manifest["stages"].items() if restored_stage(stage)}
        for stage, entry in manifest["stages"].items():  # exports made before state/ was exported: a finished stage's inputs
            states.setdefault(stage, {"inputs": entry["inputs"], "started": entry["started"]})
        write_json(target / "manifest.json", manifest)
    write_json(target / "stats.json", {stage: value for stage, value in stats.items() if restored_stage(stage)})
    kept = sorted(stage for stage in states if restored_stage(stage))
    for stage in kept:
        write_json(target / ".ssb" / f"{stage}.json", states[stage])
    # A file comes back with its stage's recorded inputs only: resumed from a journal without them, a stage would
    # take whatever it is started with now as the journal's.
    data = [source / f"{name}.gz" for name in TRAINING_DATA if (source / f"{name}.gz").exists()]
    for path in sorted([*data, *source.glob("eval/*/*.samples.jsonl.gz"), *source.glob("eval/*/*.summary.json")]):
        output = path.relative_to(source).as_posix().removesuffix(".gz")
        if stage_of(output) not in kept:
            _log.warning("%s: left out; no recorded inputs of stage %s", path, stage_of(output))
        elif path.name.endswith(".gz"):
            gunzip(path, target / output)
        else:
            write_bytes(target / output, path.read_bytes())
    return kept


def check_plain_files(export_dir: Path) -> None:
    """An export holds folders and plain files only: a link could make a restore read (or write) somewhere else."""
    for root, dirs, files in os.walk(export_dir):
        for name in [*dirs, *files]:
            if Path(root, name).is_symlink():
                raise RunExportError(f"{Path(root, name)}: a link; an export holds plain files and folders only")


def restore_run(export_dir: str | Path, run_dir: str | Path) -> dict[str, list[str]]:
    """Rebuild run folder ``run_dir`` from ``export_dir`` (written by ``export_run`` from that very folder), all or
    nothing; returns {round folder of the export: the stages given back}. ``ssb run`` with the run's config then
    trains the weights again and skips or resumes everything else."""
    export_dir, run_dir = Path(export_dir), Path(run_dir)
    if not export_dir.is_dir():
        raise RunExportError(f"{export_dir}: no such export folder")
    check_plain_files(export_dir)
    if not (export_dir / ROUNDS_FILE).exists():
        later = sorted(path.name for path in export_dir.glob("round-*") if path.name != "round-1")
        if later:
            raise RunExportError(f"{export_dir / ROUNDS_FILE}: missing; the export holds {', '.join(later)} of an iterated run")
        if not (export_dir / "round-1").is_dir():
            raise RunExportError(f"{export_dir}: not an export of a run (no {ROUNDS_FILE}, no round-1/); written by ssb export?")
    rounds = run_rounds(export_dir)
    made_from = recorded_run_dir(export_dir, rounds)
    if made_from is not None and Path(made_from) != run_dir:
        raise RunExportError(f"{export_dir}: exported from {made_from}, whose path its recorded stage inputs name; "
                             f"restore it there (as the run's run_dir spelled it), not to {run_dir}")
    if run_dir.exists() or run_dir.is_symlink():
        raise RunExportError(f"{run_dir} exists: the restore writes only a new folder (remove it, or resume the run there)")
    # A staging folder of its own (never one that was there: it may hold a user's files, or be a link), renamed into place
    # at the end; a killed restore leaves it behind under a hidden name, to be removed by hand.
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.restoring-"))
    staging.chmod(umask_mode(0o777))
    restored = {}
    try:
        for r, folder in rounds:
            source = export_dir / f"round-{r}"
            if not source.is_dir():
                continue  # listed by rounds.json before anything of it was exported
            restored[source.name] = restore_round(source, staging / folder)
        for file in REPORT_FILES:
            if (export_dir / file).exists():
                write_bytes(staging / file, (export_dir / file).read_bytes())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.rename(run_dir)  # all or nothing: an interrupted restore leaves no folder that looks like a run
    return restored
