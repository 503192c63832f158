"""Rebuild an iterated run's folder from its committed export, so that the run goes on where it got to.

    python studies/common/evidence_restore.py NAME RUN_DIR
    python studies/common/evidence_restore.py --round R NAME RUN_DIR

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
This is ``ssb restore studies/rounds/results/NAME RUN_DIR`` (``ssb.runfolder.export``) of an iterated run's export.

``--round R`` gives back round R of the export alone, as a plain run folder anywhere (``ssb.runfolder.export.restore_round``):
its training data and evaluations with their stages' recorded inputs, for another study to start from (onpolicy.sh
``data``: round 1 of rounds-ssb-min32, the evidence run's training data). It too writes only a new folder.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ssb.runfolder.export import RunExportError, restore_round, restore_run
from ssb.runfolder.record import ROUNDS_FILE

OUT = Path(__file__).resolve().parent.parent / "rounds" / "results"


def restore(name: str, run_dir: Path, results: Path = OUT) -> None:
    export = results / name
    if not (export / ROUNDS_FILE).exists():
        raise SystemExit(f"{export}: no {ROUNDS_FILE}; not an export of an iterated run (evidence_export.py rounds)")
    try:
        restored = restore_run(export, run_dir)
    except RunExportError as exc:
        raise SystemExit(str(exc)) from None
    for folder, kept in restored.items():
        print(f"round {folder.removeprefix('round-')}: {', '.join(kept) or 'nothing'} restored")


def restore_one_round(name: str, round_: int, run_dir: Path, results: Path = OUT) -> None:
    source = results / name / f"round-{round_}"
    if not source.is_dir():
        raise SystemExit(f"{source}: no such exported round")
    if run_dir.exists() or run_dir.is_symlink():
        raise SystemExit(f"{run_dir} exists: the restore writes only a new folder")
    try:
        kept = restore_round(source, run_dir)
    except RunExportError as exc:
        raise SystemExit(str(exc)) from None
    print(f"round {round_}: {', '.join(kept) or 'nothing'} restored")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a folder of studies/rounds/results/ written by evidence_export.py rounds")
    parser.add_argument("run_dir", type=Path, help="the run folder to rebuild (the one the export was made from; with --round, a new one)")
    parser.add_argument("--round", type=int, metavar="R", help="only round R, as a plain run folder")
    parser.add_argument("--results", type=Path, default=OUT, help="the folder that holds NAME (default: studies/rounds/results)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # a file left out says why
    if args.round is None:
        restore(args.name, args.run_dir, args.results)
    else:
        restore_one_round(args.name, args.round, args.run_dir, args.results)


if __name__ == "__main__":
    main()
