"""Recompute the evidence study's accuracies and paired comparisons from the committed samples alone.

    python studies/evidence/evidence_recompute.py [--out DIR] [--arm NAME=M1,M2 ...] [--compare A:B ...]
    python studies/evidence/evidence_recompute.py --plan studies/evidence/plan.yaml [--plan-models-only] [--out DIR]
    python studies/evidence/evidence_recompute.py --plan studies/evidence/plan.yaml --figures studies/evidence/results

Unpacks every committed arm of studies/evidence/results/ (``<arm>/<benchmark>.samples.jsonl.gz``
and its summary) into an evaluation folder laid out as ``ssb eval`` writes it, then runs ``ssb
report`` on it with the given arms and comparisons (default: every pair the study names whose arms
are committed) or with the study's declared analysis plan (``--plan``, as ``evidence.sh report`` runs
it), and adds the distillation diagnostics table (``ssb report``'s: mean of the first and the last 3
logged values) from each trained arm's committed ``distill/metrics.jsonl.gz``. Nothing is read from
the run folders the study trained in, so the numbers can be checked without a model.

``--figures DIR`` writes only the report's two plots, ``accuracy.png`` and ``comparisons.png``, into DIR (the committed
ones: ``--figures studies/evidence/results``), drawn from the arms of the study's evaluation folder, the one
``evidence.sh report`` reads: every committed arm but the precision check's, which were evaluated in a folder of their
own (``PRECISION_ARMS``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
from pathlib import Path

from ssb.report import diagnostics_table, write_report

RESULTS = Path(__file__).resolve().parent / "results"
STUDY_COMPARISONS = ("ssb:sft", "ssb:base", "sft:base", "ssb:grpo", "ssb:random-teacher-hint", "ssb-t1:ssb", "ssb-ce:ssb", "ssb-eot:ssb",
                     "ssb-t4:ssb", "sft-min32:sft", "ssb:sft-min32", "sft-min32:base", "ssb-min32:ssb",
                     "ssb-min32:sft-min32")
PRECISION_ARMS = ("base-fp32", "ssb-fp32")  # evidence.sh precision: GSM8K test[:200] with exact weights, in $runs-eval-fp32
FIGURES = ("accuracy.png", "comparisons.png")
SEED_ARMS = {"ssb": ("ssb", "ssb-s1", "ssb-s2"), "sft": ("sft", "sft-s1", "sft-s2"), "sft-min32": ("sft-min32", "sft-min32-s1", "sft-min32-s2")}


def unpack(results: Path, eval_dir: Path, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Every committed arm's samples and summaries (but those of ``leave_out``) into ``eval_dir/eval/<arm>/``; returns the arms."""
    arms = set()
    for samples in sorted(results.glob("*/*.samples.jsonl.gz")):
        if samples.parent.name in leave_out:
            continue
        arms.add(samples.parent.name)
        target = eval_dir / "eval" / samples.parent.name
        target.mkdir(parents=True, exist_ok=True)
        with gzip.open(samples, "rb") as f, open(target / samples.name.removesuffix(".gz"), "wb") as g:
            shutil.copyfileobj(f, g)
        # The folder names the arm: an arm evaluated in a folder of its own (the precision check's base-fp32)
        # carries the model name it had there ("base"), which would otherwise stand in for the arm of that name.
        name = samples.name.replace(".samples.jsonl.gz", ".summary.json")
        summary = json.loads((samples.parent / name).read_text())
        (target / name).write_text(json.dumps({**summary, "model": samples.parent.name}, indent=2))
    return sorted(arms)


def unpack_metrics(results: Path, train_dir: Path) -> dict[str, Path]:
    """Every committed arm's per-step distillation metrics into ``train_dir/<arm>/distill/``; returns {arm: its folder}."""
    folders = {}
    for metrics in sorted(results.glob("*/distill/metrics.jsonl.gz")):
        arm = metrics.parent.parent.name
        folders[arm] = train_dir / arm
        (folders[arm] / "distill").mkdir(parents=True, exist_ok=True)
        with gzip.open(metrics, "rb") as f, open(folders[arm] / "distill" / "metrics.jsonl", "wb") as g:
            shutil.copyfileobj(f, g)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder for report.md and its plots (default: a temporary folder, printed)")
    parser.add_argument("--arm", action="append", default=[])
    parser.add_argument("--compare", action="append", default=[])
    parser.add_argument("--plan", type=Path, help="an analysis plan for ssb report --plan (studies/evidence/plan.yaml), instead of --arm/--compare")
    parser.add_argument("--plan-models-only", action="store_true",
                        help="with --plan: report (and draw) only the models of the plan's arms, not every committed arm")
    parser.add_argument("--figures", type=Path, help="write only accuracy.png and comparisons.png, of the study's evaluation folder, here")
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another study's results folder whose committed arms join the evidence study's (studies/onpolicy/results)")
    args = parser.parse_args()
    eval_dir = Path(tempfile.mkdtemp(prefix="evidence-eval-")) / "evidence-eval"
    models = unpack(RESULTS, eval_dir, PRECISION_ARMS if args.figures else ())
    for more in args.also:
        models += unpack(more, eval_dir)
    if args.plan_models_only:
        if args.plan is None:
            parser.error("--plan-models-only needs --plan")
        from ssb.stats.analysis_plan import load_plan

        keep = {m for members in load_plan(args.plan).arms.values() for m in members}
        for model in set(models) - keep:
            shutil.rmtree(eval_dir / "eval" / model)
        models = [m for m in models if m in keep]
    arms = args.arm or [f"{name}={','.join(ms)}" for name, ms in SEED_ARMS.items() if all(m in models for m in ms)]
    pooled = {spec.partition("=")[0] for spec in arms}
    named = {m for spec in arms for m in spec.partition("=")[2].split(",")}
    available = (set(models) - named) | pooled
    comparisons = args.compare or [c for c in STUDY_COMPARISONS if set(c.split(":")) <= available]
    out = eval_dir.parent / "report" if args.figures else args.out or eval_dir
    if args.plan is not None:
        report = write_report(eval_dir, arms=args.arm, comparisons=args.compare, plan=args.plan, out=out)
    else:
        report = write_report(eval_dir, arms=arms, comparisons=comparisons, out=out)
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for name in FIGURES:
            if (out / name).exists():
                shutil.copyfile(out / name, args.figures / name)
                print(args.figures / name)
        return
    trained = unpack_metrics(RESULTS, eval_dir.parent / "training")
    diagnostics = diagnostics_table({arm: folder for arm, folder in trained.items() if arm in models})  # --plan-models-only
    if diagnostics:
        with open(report, "a", encoding="utf-8") as f:
            f.write("\n## Distillation diagnostics of the committed arms\n\nMean of the first 3 -> mean of the last 3 steps that logged "
                    "each value (distill/metrics.jsonl.gz of each arm).\n\n" + diagnostics + "\n")
    print(report)


if __name__ == "__main__":
    main()
