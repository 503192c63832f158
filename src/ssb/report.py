"""``ssb report RUN_DIR``: the comparison table and plots of a run folder, in ``report.md``.

Table: one row per evaluated model, one column per benchmark, cells "pass@1 % ± 95% CI half-width
(n questions)". Plots (PNG, matplotlib): the training curves of ``distill/metrics.jsonl`` (loss,
gradient norm, solution length per step: the panels of the paper's Fig. 2) and pass@1 per benchmark
per model with CI error bars. Every adapter is also compared with the base model on the same
questions (paired difference, McNemar's test), and its training compute is read from the run folder
that produced it, so adapters trained in other folders (the controls) are accounted for too. The
report ends with the commands that produced every number, taken from the run's manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ssb.artifacts import read_jsonl
from ssb.metrics import paired_difference
from ssb.packaged_models import default_cache_dir
from ssb.stages import STAGES

TRAINING_STAGES = tuple(stage.name for stage in STAGES if stage.training_compute)


def load_summaries(run_dir: Path) -> dict[str, dict[str, dict]]:
    """{model: {benchmark: summary}} from eval/<model>/<benchmark>.summary.json."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted((run_dir / "eval").glob("*/*.summary.json")):
        summary = json.loads(path.read_text())
        out.setdefault(summary["model"], {})[summary["benchmark"]] = summary
    return out


def cell(summary: dict | None) -> str:
    if summary is None:
        return "n/a"
    p = summary["pass@1"]
    half = (p["ci95"][1] - p["ci95"][0]) / 2
    return f"{100 * p['mean']:.1f} ± {100 * half:.1f} (n={p['n_questions']})"


def table(summaries: dict[str, dict[str, dict]]) -> tuple[list[str], str]:
    benchmarks = sorted({b for per_model in summaries.values() for b in per_model})
    models = sorted(summaries, key=lambda m: (m != "base", m))
    lines = ["| model | " + " | ".join(benchmarks) + " |", "|---|" + "---|" * len(benchmarks)]
    lines += [f"| {m} | " + " | ".join(cell(summaries[m].get(b)) for b in benchmarks) + " |" for m in models]
    return benchmarks, "\n".join(lines)


def per_question_scores(run_dir: Path, model: str, benchmark: str) -> dict[str, float]:
    """{question id: fraction of its samples graded correct} from the evaluation journal."""
    records = read_jsonl(run_dir / "eval" / model / f"{benchmark}.samples.jsonl")
    return {r["id"]: sum(c["correct"] for c in r["completions"]) / len(r["completions"]) for r in records}


def paired_table(run_dir: Path, summaries: dict[str, dict[str, dict]], benchmarks: list[str]) -> str | None:
    """Each model minus base on the questions both answered: points, 95% CI, gained/lost, p."""
    if "base" not in summaries or len(summaries) < 2:
        return None
    lines = ["| model | benchmark | difference (points) | 95% CI | questions gained / lost | McNemar p |", "|---|---|---|---|---|---|"]
    base_scores = {b: per_question_scores(run_dir, "base", b) for b in benchmarks if b in summaries["base"]}
    for model in sorted(m for m in summaries if m != "base"):
        for benchmark in benchmarks:
            if benchmark not in summaries[model] or benchmark not in base_scores:
                continue
            base = base_scores[benchmark]
            scores = per_question_scores(run_dir, model, benchmark)
            common = sorted(base.keys() & scores.keys())
            d = paired_difference([scores[q] for q in common], [base[q] for q in common])
            p_value = "<0.001" if d["p_value"] < 0.001 else format(d["p_value"], ".3f")
            lines.append(f"| {model} | {benchmark} | {100 * d['mean']:+.1f} | [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] "
                         f"| {d['better']} / {d['worse']} (n={d['n_questions']}) | {p_value} |")
    return "\n".join(lines)


def stage_compute(stage: str, stats: dict) -> tuple[int | None, int | None, float | None]:
    """(generated tokens, optimiser steps, wall seconds of the last invocation) of one stage's stats."""
    return stats.get("generated_tokens"), stats.get("steps"), stats.get("this_invocation", {}).get("wall_s")  # absent: an older ssb


def training_folder(adapter: str | None) -> Path | None:
    """The run folder an adapter was trained in: its nearest ancestor holding a manifest."""
    if adapter is None:
        return None
    for folder in Path(adapter).resolve().parents:
        if (folder / "manifest.json").exists():
            return folder
    return None


def compute_table(run_dir: Path, summaries: dict[str, dict[str, dict]]) -> str | None:
    """Training compute behind each evaluated model, summed over the stages of its own run folder."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        return None
    stages = json.loads(manifest_path.read_text())["stages"]
    adapters = {name.split("/")[1]: entry.get("model_spec", {}).get("adapter") for name, entry in stages.items() if name.startswith("eval/")}
    lines = ["| model | trained in | stages | generated tokens | optimiser steps | wall s |", "|---|---|---|---|---|---|"]
    for model in sorted(summaries, key=lambda m: (m != "base", m)):
        folder = training_folder(adapters.get(model))
        if folder is None or not (folder / "stats.json").exists():
            lines.append(f"| {model} | - | - | 0 | 0 | 0 |" if model == "base" else f"| {model} | unknown | | | | |")
            continue
        stats = json.loads((folder / "stats.json").read_text())
        used = [stage for stage in TRAINING_STAGES if stage in stats]
        numbers = [stage_compute(stage, stats[stage]) for stage in used]
        tokens, steps, wall = (sum(n[i] or 0 for n in numbers) for i in range(3))
        lines.append(f"| {model} | {folder.name} | {', '.join(used)} | {tokens} | {steps} | {wall:.0f} |")
    return "\n".join(lines)


def _pyplot():
    # matplotlib caches fonts under the home folder unless told otherwise: keep it in ssb's cache.
    os.environ.setdefault("MPLCONFIGDIR", str(default_cache_dir() / "matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(metrics: list[dict], path: Path) -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    steps = [m["step"] for m in metrics]
    panels = [("loss", [m["loss"] for m in metrics], "loss (T² KL + CE)"),
              ("grad_norm", [m["grad_norm"] for m in metrics], "gradient norm (before clipping)"),
              ("solution length", [m["solution_tokens"] / m["sequences"] for m in metrics], "solution tokens per sequence")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (title, values, ylabel) in zip(axes, panels):
        ax.plot(steps, values, marker="o", markersize=3)
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("SSB distillation (distill/metrics.jsonl)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(summaries: dict[str, dict[str, dict]], benchmarks: list[str], path: Path) -> None:
    plt = _pyplot()

    models = sorted(summaries, key=lambda m: (m != "base", m))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(benchmarks) + 2), 4.5))
    for i, model in enumerate(models):
        xs, means, errors = [], [], [[], []]
        for j, benchmark in enumerate(benchmarks):
            summary = summaries[model].get(benchmark)
            if summary is None:
                continue
            p = summary["pass@1"]
            xs.append(j + (i - (len(models) - 1) / 2) * width)
            means.append(100 * p["mean"])
            errors[0].append(100 * (p["mean"] - p["ci95"][0]))
            errors[1].append(100 * (p["ci95"][1] - p["mean"]))
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=model)
    ax.set_xticks(range(len(benchmarks)))
    ax.set_xticklabels(benchmarks)
    ax.set_ylabel("pass@1 (%), 95% CI")
    ax.set_title("Accuracy per benchmark")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    summaries = load_summaries(run_dir)
    lines = [f"# SSB report: {run_dir.name}", ""]
    if summaries:
        benchmarks, markdown = table(summaries)
        plot_accuracy(summaries, benchmarks, run_dir / "accuracy.png")
        lines += ["## pass@1 (%) ± 95% CI half-width (questions)", "", markdown, "", "![accuracy](accuracy.png)", ""]
        extra = ["| model | benchmark | pass@k | maj@k | strict pass@1 % | truncated % | no box % | mean tokens |",
                 "|---|---|---|---|---|---|---|---|"]
        for model, per_model in sorted(summaries.items()):
            for benchmark, s in sorted(per_model.items()):
                pk = ", ".join(f"@{k}: {100 * v:.1f}" for k, v in s["pass@k"].items())
                mk = ", ".join(f"@{k}: {100 * v:.1f}" for k, v in s["maj@k"].items())
                extra.append(f"| {model} | {benchmark} | {pk} | {mk} | {100 * s['strict_pass@1']['mean']:.1f} | {100 * s['truncated_rate']:.1f} "
                             f"| {100 * s['no_boxed_answer_rate']:.1f} | {s['mean_completion_tokens']:.0f} |")
        lines += ["## Details", "", *extra, ""]
        paired = paired_table(run_dir, summaries, benchmarks)
        if paired:
            lines += ["## Difference from the base model (paired, same questions)", "", paired, ""]
        compute = compute_table(run_dir, summaries)
        if compute:
            lines += ["## Training compute per model", "",
                      "Summed over the training stages of the run folder that produced each adapter (wall time of each stage's last invocation).", "",
                      compute, ""]
    else:
        lines += ["No evaluation summaries under eval/ yet (run `ssb eval`).", ""]
    metrics = read_jsonl(run_dir / "distill" / "metrics.jsonl")
    if metrics:
        plot_training(metrics, run_dir / "training.png")
        lines += ["## Training", "", f"{len(metrics)} optimiser steps; loss {metrics[0]['loss']:.4f} -> {metrics[-1]['loss']:.4f}.", "",
                  "![training curves](training.png)", ""]
    stats_path = run_dir / "stats.json"
    if stats_path.exists():
        lines += ["## Compute", "", "| stage | generated tokens | optimiser steps | wall s (last invocation) |", "|---|---|---|---|"]
        for stage, s in json.loads(stats_path.read_text()).items():
            if stage.startswith("eval/"):
                continue
            lines.append("| " + " | ".join([stage, *("" if v is None else str(v) for v in stage_compute(stage, s))]) + " |")
        lines.append("")
    manifest_path = run_dir / "manifest.json"
    if manifest_path.exists():
        stages = json.loads(manifest_path.read_text())["stages"]
        lines += ["## Provenance", "", "Commands and inputs that produced these numbers (from manifest.json):", ""]
        for stage, entry in stages.items():
            lines.append(f"- `{stage}`: `{entry.get('command', '?')}` "
                         f"(finished {entry.get('finished', '?')}, inputs {entry.get('inputs_fingerprint', '?')})")
        lines.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
