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
inputs (state/), per-step metrics and every evaluation's samples and summary: ``ssb export RUN_DIR
studies/rounds/results/NAME`` (``ssb.runfolder.export``). It may run while the run goes on: a stage under way
is exported as far as it got, and studies/common/evidence_restore.py (``ssb restore``) rebuilds the run
folder from the export so that the run resumes there on another machine.
Anyone can recompute each committed pass@1, CI and paired difference from these files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ssb.runfolder.export import TRAINING_DATA, RunExportError, export_run, gzip_copy, plain_copy
from ssb.runfolder.record import ROUNDS_FILE

STUDIES = Path(__file__).resolve().parent.parent
EVIDENCE = STUDIES / "evidence" / "results"
ROUNDS = STUDIES / "rounds" / "results"


def export_phase1(run_dir: Path) -> None:
    for name in TRAINING_DATA:
        gzip_copy(run_dir / name, EVIDENCE / "phase1")
    for name in ("stats.json", "manifest.json"):
        plain_copy(run_dir / name, EVIDENCE / "phase1")


def export_arm(name: str, eval_dir: Path, model: str, train_dir: Path | None, results: Path = EVIDENCE) -> None:
    target = results / name
    samples = sorted((eval_dir / "eval" / model).glob("*.samples.jsonl"))
    if not samples:
        raise SystemExit(f"{eval_dir}/eval/{model}: no evaluation samples")
    for path in samples:
        gzip_copy(path, target)
        plain_copy(path.with_name(path.name.replace(".samples.jsonl", ".summary.json")), target)
    if train_dir is not None:
        for name_ in ("stats.json", "manifest.json"):
            plain_copy(train_dir / name_, target, f"training-{name_}")
        for metrics in (train_dir / "distill" / "metrics.jsonl", train_dir / "grpo" / "metrics.jsonl", train_dir / "onpolicy" / "metrics.jsonl"):
            if metrics.exists():
                gzip_copy(metrics, target / metrics.parent.name)


def export_rounds(name: str, run_dir: Path, results: Path = ROUNDS) -> None:
    """``ssb export RUN_DIR results/NAME`` of an iterated run."""
    if not (run_dir / ROUNDS_FILE).exists():
        raise SystemExit(f"{run_dir}: no {ROUNDS_FILE}; not an iterated run (rounds > 1)")
    try:
        export_run(run_dir, results / name)
    except RunExportError as exc:
        raise SystemExit(str(exc)) from None


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
    arm.add_argument("--results", type=Path, default=EVIDENCE, help="the study's results folder (default: the evidence study's)")
    rounds = sub.add_parser("rounds")
    rounds.add_argument("name")
    rounds.add_argument("run_dir", type=Path)
    rounds.add_argument("--results", type=Path, default=ROUNDS, help="where NAME/ goes (default: the rounds study's results folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # a round not exported says why
    if args.what == "phase1":
        export_phase1(args.run_dir)
    elif args.what == "rounds":
        export_rounds(args.name, args.run_dir, args.results)
    else:
        export_arm(args.name, args.eval_dir, args.model or args.name, args.train_dir, args.results)


if __name__ == "__main__":
    main()
