"""Copy what a number of the evidence study rests on into benchmarks/results/evidence/, compressed.

    python benchmarks/evidence_export.py phase1 RUN_DIR
    python benchmarks/evidence_export.py arm NAME --eval-dir EVAL_DIR [--model MODEL] [--train-dir RUN_DIR]
    python benchmarks/evidence_export.py rounds NAME RUN_DIR

phase1: the shared training data (rollouts, refinements, teacher and student views, dropped
questions) with the run's stats and manifest. arm: every evaluation samples file and summary of
MODEL (default NAME) in EVAL_DIR, and the training folder's stats, manifest and per-step metrics.
rounds: an iterated run (``rounds`` > 1) into NAME/: its rounds.json, report.md and its plots, and per
round (round-1 is the run folder itself) the training data, stats, manifest, each stage's recorded
inputs (state/), per-step metrics and every evaluation's samples and summary. It may run while the
run goes on: a stage under way is exported as far as it got, and benchmarks/evidence_restore.py
rebuilds the run folder from the export so that the run resumes there on another machine.
Anyone can recompute each committed pass@1, CI and paired difference from these files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "evidence"
PHASE1 = ("rollouts.jsonl", "refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl")


def gzip_copy(source: Path, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as f, gzip.GzipFile(target_dir / f"{source.name}.gz", "wb", compresslevel=9, mtime=0) as g:
        shutil.copyfileobj(f, g)


def plain_copy(source: Path, target_dir: Path, name: str | None = None) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target_dir / (name or source.name))


def export_phase1(run_dir: Path) -> None:
    for name in PHASE1:
        gzip_copy(run_dir / name, OUT / "phase1")
    for name in ("stats.json", "manifest.json"):
        plain_copy(run_dir / name, OUT / "phase1")


def export_arm(name: str, eval_dir: Path, model: str, train_dir: Path | None) -> None:
    target = OUT / name
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


def finished_stages(folder: Path) -> set[str]:
    manifest = folder / "manifest.json"
    return set(json.loads(manifest.read_text())["stages"]) if manifest.exists() else set()


def listed_rounds(folder: Path) -> int:
    rounds = folder / "rounds.json"
    return len(json.loads(rounds.read_text())["per_round"]) if rounds.exists() else 0


def export_rounds(name: str, run_dir: Path, results: Path = OUT) -> None:
    target = results / name
    # A run rebuilt from this export (evidence_restore.py) retrains what the export finished: until it has, the
    # folder holds less than the export, which keeps what it has (an export never goes back).
    if listed_rounds(run_dir) >= listed_rounds(target):
        for file in ("rounds.json", "report.md", "rounds.png", "accuracy.png", "training.png"):  # report.md links the plots
            if (run_dir / file).exists():
                plain_copy(run_dir / file, target)
    for entry in json.loads((run_dir / "rounds.json").read_text())["per_round"]:
        folder, out = run_dir / entry["folder"], target / f"round-{entry['round']}"
        if not finished_stages(folder) >= finished_stages(out):
            print(f"{folder}: not exported; {out} holds stages it has not finished (again) yet")
            continue
        for file in PHASE1:
            if (folder / file).exists():
                gzip_copy(folder / file, out)
        for file in ("stats.json", "manifest.json"):
            if (folder / file).exists():
                plain_copy(folder / file, out)
        # What each stage was started with (finished or not): evidence_restore.py gives it back, so that a stage
        # exported mid-way resumes from its exported journal instead of starting again.
        for state in sorted((folder / ".ssb").glob("**/*.json")):
            plain_copy(state, out / "state" / state.parent.relative_to(folder / ".ssb"))
        if (folder / "distill" / "metrics.jsonl").exists():
            gzip_copy(folder / "distill" / "metrics.jsonl", out / "distill")
        for samples in sorted((folder / "eval").glob("*/*.samples.jsonl")):
            gzip_copy(samples, out / "eval" / samples.parent.name)
            summary = samples.with_name(samples.name.replace(".samples.jsonl", ".summary.json"))
            if summary.exists():  # an evaluation under way has its samples so far and no summary yet
                plain_copy(summary, out / "eval" / samples.parent.name)


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
