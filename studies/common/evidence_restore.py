"""Rebuild an iterated run's folder from its committed export, so that the run goes on where it got to.

    python studies/common/evidence_restore.py NAME RUN_DIR

NAME is a folder of studies/rounds/results/ written by ``evidence_export.py rounds NAME RUN_DIR``
(studies/rounds/rounds.sh does both). Multi-hour rounds outlast one machine's session; their exports are
what survives, and this is the way back.

What comes back, per round: the training data (rollouts, refinements, views, dropped questions; the
journal of a stage that was under way too), every evaluation's samples and summary, and for each of
those stages its manifest entry, recorded inputs and stats. ``ssb run`` then skips what had finished
and resumes what had not, chunk by chunk, with the same per-chunk seeds.

What does not: teacher targets, trained adapters and merged models, since no weights are committed.
Their stages run again (``teacher``, ``distill`` and ``grpo`` are left out of the manifest), and a
round's ``merge`` is kept, so it is redone from the adapter it recorded. The run folder checks that
the retrained adapters are the ones the exported rounds were built on: a merge and every evaluation
record their adapter's sha256, and a retrained adapter that differs (another CPU, other kernels) stops
the run naming the change, rather than continuing on a model the committed numbers did not come from.

RUN_DIR must be the folder the export was made from (the recorded stage inputs name the round models
by path); the restore refuses another one, and refuses to write into a folder that already exists.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "rounds" / "results"
NOT_EXPORTED = ("teacher", "distill", "grpo")  # stages whose outputs are weights: they run again


def restored_stage(stage: str) -> bool:
    return stage not in NOT_EXPORTED


def gunzip(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(source, "rb") as f, open(target, "wb") as g:
        shutil.copyfileobj(f, g)


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def recorded_run_dir(rounds: dict) -> str | None:
    """The folder the export was made from, as round 2's model path names it (None with one round)."""
    later = [r for r in rounds["per_round"] if r["round"] > 1]
    return str(Path(later[0]["model"]).parent.parent) if later else None


def stage_of(output: str) -> str:
    """The stage that writes an exported file (a path inside the round folder, without .gz)."""
    if output.startswith("eval/"):
        return output.removesuffix(".samples.jsonl").removesuffix(".summary.json")
    return "rollouts" if output == "rollouts.jsonl" else "refine"


def restore_round(source: Path, target: Path) -> list[str]:
    """One round's folder from its export; returns the stages given back."""
    manifest = json.loads((source / "manifest.json").read_text()) if (source / "manifest.json").exists() else None
    stats = json.loads((source / "stats.json").read_text()) if (source / "stats.json").exists() else {}
    states = {path.relative_to(source / "state").with_suffix("").as_posix(): json.loads(path.read_text())
              for path in sorted(source.glob("state/**/*.json"))}
    if manifest is not None:
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
    for path in sorted([*source.glob("*.jsonl.gz"), *source.glob("eval/*/*.samples.jsonl.gz"), *source.glob("eval/*/*.summary.json")]):
        output = path.relative_to(source).as_posix().removesuffix(".gz")
        if stage_of(output) not in kept:
            print(f"{path}: left out; no recorded inputs of stage {stage_of(output)}")
        elif path.name.endswith(".gz"):
            gunzip(path, target / output)
        else:
            (target / output).parent.mkdir(parents=True, exist_ok=True)
            (target / output).write_bytes(path.read_bytes())
    return kept


def restore(name: str, run_dir: Path, results: Path = OUT) -> None:
    export = results / name
    rounds_file = export / "rounds.json"
    if not rounds_file.exists():
        raise SystemExit(f"{export}: no rounds.json; not an export of an iterated run (evidence_export.py rounds)")
    rounds = json.loads(rounds_file.read_text())
    made_from = recorded_run_dir(rounds)
    if made_from is not None and Path(made_from) != run_dir:
        raise SystemExit(f"{rounds_file}: exported from {made_from}, whose path its rounds' recorded inputs name; restore it there, not to {run_dir}")
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: the restore writes only a new folder (remove it, or resume the run there)")
    staging = run_dir.with_name(run_dir.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    for entry in rounds["per_round"]:
        source = export / f"round-{entry['round']}"
        if not source.is_dir():
            continue  # listed by rounds.json before anything of it was exported
        kept = restore_round(source, staging if entry["round"] == 1 else staging / entry["folder"])
        print(f"round {entry['round']}: {', '.join(kept) or 'nothing'} restored")
    write_json(staging / "rounds.json", rounds)
    staging.rename(run_dir)  # all or nothing: an interrupted restore leaves no folder that looks like a run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a folder of studies/rounds/results/ written by evidence_export.py rounds")
    parser.add_argument("run_dir", type=Path, help="the run folder to rebuild (the one the export was made from)")
    args = parser.parse_args()
    restore(args.name, args.run_dir)


if __name__ == "__main__":
    main()
