"""Copy what a number of the evidence and rounds studies rests on into their results/ folders, compressed.

    python studies/common/evidence_export.py phase1 RUN_DIR
    python studies/common/evidence_export.py arm NAME --eval-dir EVAL_DIR [--model MODEL] [--train-dir RUN_DIR]
    python studies/common/evidence_export.py rounds NAME RUN_DIR

phase1 and arm write to studies/evidence/results/, rounds to studies/rounds/results/.
phase1: the shared training data (rollouts, refinements, teacher and student views, dropped
questions) with the run's stats and manifest. arm: every evaluation samples file and summary of
MODEL (default NAME) in EVAL_DIR, and the training folder's stats, manifest and per-step metrics.
rounds: an iterated run (``rounds`` > 1) into NAME/: its rounds.json, report.md and its plots, and per
round (round-1 is the run folder itself) the training data, stats, manifest, each stage's recorded
inputs (state/), per-step metrics and every evaluation's samples and summary. It may run while the
run goes on: a stage under way is exported as far as it got, and studies/common/evidence_restore.py
rebuilds the run folder from the export so that the run resumes there on another machine.
Anyone can recompute each committed pass@1, CI and paired difference from these files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
from pathlib import Path

from ssb.evaluation import adapter_fingerprint

STUDIES = Path(__file__).resolve().parent.parent
EVIDENCE = STUDIES / "evidence" / "results"
ROUNDS = STUDIES / "rounds" / "results"
PHASE1 = ("rollouts.jsonl", "refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl")


def gzip_copy(source: Path, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{source.name}.gz"
    partial = target.with_name(target.name + ".partial")
    # The header names the target (as gzip.open(target) would): the same bytes for the same content, export after export.
    with open(source, "rb") as f, open(partial, "wb") as raw, gzip.GzipFile(str(target), "wb", 9, raw, mtime=0) as g:
        shutil.copyfileobj(f, g)
    os.replace(partial, target)  # a killed export leaves no cut-off file


def plain_copy(source: Path, target_dir: Path, name: str | None = None) -> None:
    write_bytes(target_dir / (name or source.name), source.read_bytes())


def write_bytes(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_name(target.name + ".partial").write_bytes(data)
    os.replace(target.with_name(target.name + ".partial"), target)


def export_phase1(run_dir: Path) -> None:
    for name in PHASE1:
        gzip_copy(run_dir / name, EVIDENCE / "phase1")
    for name in ("stats.json", "manifest.json"):
        plain_copy(run_dir / name, EVIDENCE / "phase1")


def export_arm(name: str, eval_dir: Path, model: str, train_dir: Path | None) -> None:
    target = EVIDENCE / name
    samples = sorted((eval_dir / "eval" / model).glob("*.samples.jsonl"))
    if not samples:
        raise SystemExit(f"{eval_dir}/eval/{model}: no evaluation samples")
    for path in samples:
        gzip_copy(path, target)
        plain_copy(path.with_name(path.name.replace(".samples.jsonl", ".summary.json")), target)
    if train_dir is not None:
        for name_ in ("stats.json", "manifest.json"):
            plain_copy(train_dir / name_, target, f"training-{name_}")
        for metrics in (train_dir / "distill" / "metrics.jsonl", train_dir / "grpo" / "metrics.jsonl"):
            if metrics.exists():
                gzip_copy(metrics, target / metrics.parent.name)


def stages_of(manifest: bytes | None) -> dict:
    return json.loads(manifest)["stages"] if manifest else {}


def read_if_there(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def listed_rounds(folder: Path) -> int:
    rounds = folder / "rounds.json"
    return len(json.loads(rounds.read_text())["per_round"]) if rounds.exists() else 0


def stale_evaluations(folder: Path, stages: dict) -> list[str]:
    """Evaluations recorded for this folder's adapter whose sha256 is not the adapter's there now (retrained otherwise)."""
    adapter = folder / "distill" / "adapter"
    now = adapter_fingerprint(str(adapter))
    return [stage for stage, entry in stages.items() if stage.startswith("eval/") and entry["inputs"]["model"]["adapter_sha256"] is not None
            and Path(entry["inputs"]["model"]["adapter"]) == adapter and entry["inputs"]["model"]["adapter_sha256"] != now]


def export_round(folder: Path, out: Path) -> None:
    """One round's folder, as a snapshot that may be taken while its run goes on.

    The manifest (and then stats and stage states) is read first and written last: a stage it lists as finished
    has its journal complete in the export, whatever finished meanwhile, and an export killed part-way leaves the
    journals ahead of the manifest, never behind (journals only grow).
    """
    manifest, stats = read_if_there(folder / "manifest.json"), read_if_there(folder / "stats.json")
    exported = stages_of(read_if_there(out / "manifest.json"))
    # A run rebuilt from this export (evidence_restore.py) retrains what the export finished: until it has, the
    # folder holds less than the export, which keeps what it has (an export never goes back). Nor does it take a
    # retraining that came out otherwise than the adapter the exported evaluations were made with.
    missing = sorted(set(exported) - set(stages_of(manifest)))
    stale = stale_evaluations(folder, stages_of(manifest))
    if missing or stale:
        why = f"not finished (again) yet: {', '.join(missing)}" if missing else f"the adapter is not the one of {', '.join(stale)}"
        print(f"{folder}: not exported to {out}; {why}")
        return
    # What each stage was started with (finished or not): evidence_restore.py gives it back, so that a stage
    # exported mid-way resumes from its exported journal instead of starting again.
    states = {state.relative_to(folder / ".ssb"): state.read_bytes() for state in sorted((folder / ".ssb").glob("**/*.json"))}
    for file in PHASE1:
        if (folder / file).exists():
            gzip_copy(folder / file, out)
    if (folder / "distill" / "metrics.jsonl").exists():
        gzip_copy(folder / "distill" / "metrics.jsonl", out / "distill")
    for samples in sorted((folder / "eval").glob("*/*.samples.jsonl")):
        gzip_copy(samples, out / "eval" / samples.parent.name)
        summary = samples.with_name(samples.name.replace(".samples.jsonl", ".summary.json"))
        if summary.exists():  # an evaluation under way has its samples so far and no summary yet
            plain_copy(summary, out / "eval" / samples.parent.name)
    for path, data in states.items():
        write_bytes(out / "state" / path, data)
    for name, data in (("stats.json", stats), ("manifest.json", manifest)):
        if data is not None:
            write_bytes(out / name, data)


def export_rounds(name: str, run_dir: Path, results: Path = ROUNDS) -> None:
    target = results / name
    if listed_rounds(run_dir) >= listed_rounds(target):  # run_rounds lists a round when it starts it
        for file in ("rounds.json", "report.md", "rounds.png", "accuracy.png", "training.png"):  # report.md links the plots
            if (run_dir / file).exists():
                plain_copy(run_dir / file, target)
    for entry in json.loads((run_dir / "rounds.json").read_text())["per_round"]:
        export_round(run_dir / entry["folder"], target / f"round-{entry['round']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    phase1 = sub.add_parser("phase1")
    phase1.add_argument("run_dir", type=Path)
    arm = sub.add_parser("arm")
    arm.add_argument("name")
    arm.add_argument("--eval-dir", type=Path, required=True)
    arm.add_argument("--model")
    arm.add_argument("--train-dir", type=Path)
    rounds = sub.add_parser("rounds")
    rounds.add_argument("name")
    rounds.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if args.what == "phase1":
        export_phase1(args.run_dir)
    elif args.what == "rounds":
        export_rounds(args.name, args.run_dir)
    else:
        export_arm(args.name, args.eval_dir, args.model or args.name, args.train_dir)


if __name__ == "__main__":
    main()
