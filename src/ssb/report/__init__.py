"""``ssb report RUN_DIR [RUN_DIR ...]``: the comparison tables and plots of run folders, in ``report.md``.

Table: one row per evaluated model, one column per benchmark, cells "pass@1 % ± 95% CI half-width
(n questions)". Plots (PNG, matplotlib): the training curves of ``distill/metrics.jsonl`` (loss,
gradient norm, solution length per step: the panels of the paper's Fig. 2), pass@1 per benchmark and
arm with its CI and each pooled model's value, and a forest plot of the comparisons asked
(``ssb.report.plots``). Every adapter is also compared with the base model on the same questions
(paired difference, McNemar's test), and its training compute is read from the run folder that
produced it, so adapters trained in other folders (the controls) are accounted for too, with the
mean solution length of its training data and the first and last values of the distillation
diagnostics its training logged. The training data of each run folder (each round) is checked for kept
solutions that only restate the answer, open with it, use the hinted prompt's terms or copy the rollout
shown (``ssb.report.training_data``). The report ends with the commands that produced every number, taken
from the run folders' manifests.

Several run folders are read as one set of models (``ssb.stats.comparison`` says how they are named);
``--arm`` pools models (training seeds) into an arm and ``--compare A:B`` prints A minus B, in a
section of its own at the top (``ssb.report.arms``); ``--plan FILE`` declares the arms, the comparisons
and the test instead (``ssb.stats.analysis_plan``). Without either, each model is compared with the base model of
its own run folder. The report goes to the first run folder unless ``out`` names another. Each run
of several rounds gets its per-round curve first (``ssb.report.rounds``), and several such runs are
compared round by round; a run that stopped because refine kept no solution says so at the top (``ssb run``'s
result and report also name the other reasons it stops after refine: too few kept to fill a micro-batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ssb.objectives import DIAGNOSTICS
from ssb.report.arms import arms_section, plan_section
from ssb.report.plots import COMPARISONS_FIGURE, accuracy_bars, forest_rows, plot_accuracy, plot_comparisons, with_models
from ssb.report.rounds import rounds_sections
from ssb.report.tables import cell, difference_table, pyplot, save_figure
from ssb.report.training_data import training_data_section
from ssb.runfolder.artifacts import check_no_links, write_text_atomic
from ssb.runfolder.record import RunRecord
from ssb.runfolder.stages import STAGES
from ssb.stats.analysis_plan import load_plan
from ssb.stats.bootstrap import RESAMPLES, SEED
from ssb.stats.comparison import compare, model_labels
from ssb.stats.engine_anchors import engine_key

TRAINING_STAGES = tuple(stage.name for stage in STAGES if stage.training_compute)
# Per-step distillation diagnostics, summarised when distill/metrics.jsonl carries them (ssb.distill_diagnostics writes the
# first two kinds, the training loop the held-out losses).
LOGGED_DIAGNOSTICS = (*DIAGNOSTICS, "kd_share_eot", "kd_share_answer", "heldout_kd", "heldout_ce")


def load_all(run_dirs: list[Path]) -> tuple[dict[str, tuple[Path, str]], dict[str, dict[str, dict]]]:
    """Every evaluated model of the run folders: ({label: (run folder, model)}, {label: {benchmark: summary}})."""
    per_folder = [(folder, RunRecord(folder).summaries()) for folder in run_dirs]
    labels = model_labels([(str(folder), model) for folder, summaries in per_folder for model in summaries])
    models = {labels[str(folder), model]: (folder, model) for folder, summaries in per_folder for model in summaries}
    return models, {labels[str(folder), model]: s for folder, summaries in per_folder for model, s in summaries.items()}


def base_first(labels) -> list[str]:
    return sorted(labels, key=lambda m: (m.rsplit("/", 1)[-1] != "base", m))


def table(summaries: dict[str, dict[str, dict]]) -> tuple[list[str], str]:
    benchmarks = sorted({b for per_model in summaries.values() for b in per_model})
    models = base_first(summaries)
    lines = ["| model | " + " | ".join(benchmarks) + " |", "|---|" + "---|" * len(benchmarks)]
    lines += [f"| {m} | " + " | ".join(cell(summaries[m].get(b)) for b in benchmarks) + " |" for m in models]
    return benchmarks, "\n".join(lines)


def score_loader(models: dict[str, tuple[Path, str]]):
    """``scores(label, benchmark)``: a model's per-question scores, each journal read once."""
    cache: dict[tuple[str, str], dict[str, float]] = {}

    def scores(label: str, benchmark: str) -> dict[str, float]:
        if (label, benchmark) not in cache:
            folder, model = models[label]
            cache[label, benchmark] = RunRecord(folder).per_question_scores(model, benchmark)
        return cache[label, benchmark]

    return scores


def base_differences(models: dict[str, tuple[Path, str]], summaries: dict[str, dict[str, dict]], scores) -> list[tuple[str, str, dict]]:
    """Each model minus the base model of its own run folder, on every benchmark both were evaluated on."""
    base_of = {folder: label for label, (folder, model) in models.items() if model == "base"}
    rows = []
    for label in sorted(m for m in models if models[m][1] != "base" and models[m][0] in base_of):
        base = base_of[models[label][0]]
        for benchmark in sorted(summaries[label].keys() & summaries[base].keys()):
            samples = ([summaries[label][benchmark]["samples_per_question"]], [summaries[base][benchmark]["samples_per_question"]])
            rows.append((label, benchmark, compare(scores(label, benchmark), scores(base, benchmark), samples)))
    return rows


def stage_compute(stage: str, stats: dict) -> tuple[int | None, int | None, float | None]:
    """(generated tokens, optimiser steps, wall seconds) of one stage's stats.

    The wall time is the whole stage's where its stats count it over every invocation (the TRL arms'
    ``training_wall_s``), else the last invocation's. A generating stage that was resumed made only part of
    its tokens in that invocation: its wall time is then all of its tokens at the rate that
    invocation measured (an estimate; ``stage_wall_is_estimated`` tells which)."""
    if stats.get("training_wall_s") is not None:
        return stats.get("generated_tokens"), stats.get("steps"), stats["training_wall_s"]
    wall = stats.get("this_invocation", {}).get("wall_s")  # absent: an older ssb
    if stage_wall_is_estimated(stats):
        wall = round(stats["generated_tokens"] / stats["this_invocation"]["tokens_per_s"], 2)
    return stats.get("generated_tokens"), stats.get("steps"), wall


def stage_wall_mark(stats: dict) -> str:
    """How far a stage's wall time (``stage_compute``) is measured: "≈" estimated (``stage_wall_is_estimated``), "≥" a
    TRL arm resumed from a checkpoint that recorded no time (its last invocation's only: a lower bound), else ""."""
    if stage_wall_is_estimated(stats):
        return "≈"
    return "≥" if stats.get("training_wall_s") is None and stats.get("resumed_from_step") is not None else ""


def stage_wall_is_estimated(stats: dict) -> bool:
    """Whether a stage's last invocation generated fewer tokens than the stage did (it was resumed)."""
    last = stats.get("this_invocation", {})
    return bool(last.get("tokens_per_s")) and stats.get("generated_tokens", 0) > last.get("generated_tokens", 0)


def training_folder(adapter: str | None) -> Path | None:
    """The run folder an adapter was trained in: its nearest ancestor holding a manifest."""
    if adapter is None:
        return None
    for folder in Path(adapter).resolve().parents:
        if (folder / "manifest.json").exists():
            return folder
    return None


def compute_table(models: dict[str, tuple[Path, str]], trained_in: dict[str, Path | None]) -> str:
    """Training compute behind each evaluated model, summed over the stages of its own run folder."""
    lines = ["| model | trained in | stages | generated tokens | optimiser steps | wall s |", "|---|---|---|---|---|---|"]
    for label in base_first(models):
        folder = trained_in[label]
        stats = RunRecord(folder).stats if folder is not None else {}
        if not stats:
            lines.append(f"| {label} | - | - | 0 | 0 | 0 |" if models[label][1] == "base" else f"| {label} | unknown | | | | |")
            continue
        used = [stage for stage in TRAINING_STAGES if stage in stats]
        numbers = [stage_compute(stage, stats[stage]) for stage in used]
        tokens, steps, wall = (sum(n[i] or 0 for n in numbers) for i in range(3))
        marks = {stage_wall_mark(stats[stage]) for stage in used} - {""}
        mark = "≥" if "≥" in marks else "".join(marks)  # a lower bound in any stage bounds the sum from below
        lines.append(f"| {label} | {folder.name} | {', '.join(used)} | {tokens} | {steps} | {mark}{wall:.0f} |")
    return "\n".join(lines)


def diagnostics(metrics: list[dict], window: int = 3) -> dict[str, tuple[float, float]]:
    """{key: (mean of its first ``window`` logged values, mean of its last)} for each diagnostic some step carries."""
    out = {}
    for key in LOGGED_DIAGNOSTICS:
        values = [m[key] for m in metrics if m.get(key) is not None]  # the held-out losses are logged on some steps only
        if values:
            first, last = values[:window], values[-window:]
            out[key] = (sum(first) / len(first), sum(last) / len(last))
    return out


def diagnostics_table(trained_in: dict[str, Path | None]) -> str | None:
    """First and last values of each logged distillation diagnostic, one row per adapter; columns only for keys present."""
    rows = {}
    for label, folder in sorted(trained_in.items()):
        metrics = RunRecord(folder).distill_metrics() if folder is not None else []
        if diagnostics(metrics):
            rows[label] = (len(metrics), diagnostics(metrics))
    if not rows:
        return None
    keys = [k for k in LOGGED_DIAGNOSTICS if any(k in d for _, d in rows.values())]
    lines = ["| model | steps | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for label, (steps, d) in rows.items():
        lines.append(f"| {label} | {steps} | " + " | ".join(f"{d[k][0]:.4g} -> {d[k][1]:.4g}" if k in d else "" for k in keys) + " |")
    return "\n".join(lines)


def plot_training(metrics: list[dict], path: Path) -> None:
    plt = pyplot()
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
    save_figure(fig, path)
    plt.close(fig)


def details_table(summaries: dict[str, dict[str, dict]], lengths: dict[str, str | None]) -> list[str]:
    """pass@k, maj@k, strict pass@1, truncation, no-box rate and completion length per model and benchmark, with
    the mean solution length of each adapter's training data beside the completions' when any is known."""
    header = ["model", "benchmark", "pass@k", "maj@k", "strict pass@1 %", "truncated %", "no box %", "mean tokens"]
    if any(lengths.values()):
        header.append("training solution length")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, per_model in sorted(summaries.items()):
        for benchmark, s in sorted(per_model.items()):
            row = [model, benchmark, ", ".join(f"@{k}: {100 * v:.1f}" for k, v in s["pass@k"].items()),
                   ", ".join(f"@{k}: {100 * v:.1f}" for k, v in s["maj@k"].items()), f"{100 * s['strict_pass@1']['mean']:.1f}",
                   f"{100 * s['truncated_rate']:.1f}", f"{100 * s['no_boxed_answer_rate']:.1f}", f"{s['mean_completion_tokens']:.0f}"]
            lines.append("| " + " | ".join([*row, lengths.get(model) or "-"][:len(header)]) + " |")
    if len(header) > 8:
        lines += ["", "Mean tokens: of the evaluation's completions. Training solution length: mean length of the solutions the adapter was "
                      "trained on (tokens from the distillation's stats, else characters of its run folder's student.jsonl)."]
    return lines


# Fewer questions than this in every evaluation (or fewer optimiser steps) make a run a check that the pipeline works:
# at n = 100 a paired 95% CI on a difference in pass@1 is already about +-10 points wide.
SMALL_RUN_QUESTIONS = 100
SMALL_RUN_STEPS = 10


def small_run_note(summaries: dict[str, dict[str, dict]], stats: dict[str, dict]) -> str | None:
    """The report's first words on a run too small to show an effect (the demo): what it is and what it is not."""
    questions = max((s["n_questions"] for per_model in summaries.values() for s in per_model.values()), default=0)
    steps = stats.get("distill", {}).get("steps")
    if not summaries or (questions >= SMALL_RUN_QUESTIONS and (steps is None or steps >= SMALL_RUN_STEPS)):
        return None
    trained = f" after {steps} optimiser step{'s' if steps != 1 else ''}" if steps is not None else ""
    return (f"**A small run**: at most {questions} questions per evaluation{trained}. It checks that the pipeline runs; its "
            "differences are not evidence for or against the method (see each CI and p below). The evidence is in the studies of "
            "the ssb repository (studies/evidence/README.md).")


def engines_note(summaries: dict[str, dict[str, dict]]) -> str | None:
    """A warning where the evaluations shown ran on different engines (backend, device or CPU class, as each summary records
    it: ``ssb.evaluation.evaluation_engine``); None where they agree or at most one is recorded."""
    engines: dict[str, list[str]] = {}
    shown: dict[str, dict] = {}
    for label in base_first(summaries):
        for benchmark, summary in sorted(summaries[label].items()):
            if "engine" in summary:
                key = engine_key(summary)
                engines.setdefault(key, []).append(f"{label}/{benchmark}")
                shown.setdefault(key, summary["engine"])
    if len(engines) < 2:
        return None
    described = "; ".join(f"{', '.join(evaluations)}: {engine_words(shown[key])}" for key, evaluations in engines.items())
    return (f"**Evaluated on different engines**: {described}. The same model and settings generate other text on another "
            "engine or CPU class, so a difference between evaluations of different engines includes the engines' own.")


def engine_words(engine: dict) -> str:
    backend = engine.get("backend", {})
    settings = " ".join(str(backend[k]) for k in ("name", "weight_format", "inference_precision", "dtype") if backend.get(k) is not None)
    cpu = engine.get("cpu") or {}
    unit = next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in cpu.get("kernel_flags", [])), "no AVX2")
    return f"{settings} on {engine.get('device')}, {cpu.get('model') or 'unknown CPU'} ({unit})"


def compute_section(stats: dict) -> list[str]:
    """The "Compute" section: each training-side stage's generated tokens, optimiser steps and wall time."""
    stage_stats = {k: v for k, v in stats.items() if not k.startswith("eval/")}
    if not stage_stats:  # a folder that only evaluated has no compute of its own
        return []
    lines = ["## Compute", "", "| stage | generated tokens | optimiser steps | wall s |", "|---|---|---|---|"]
    for stage, s in stage_stats.items():
        cells = ["" if v is None else str(v) for v in stage_compute(stage, s)]
        cells[2] = stage_wall_mark(s) + cells[2]
        lines.append("| " + " | ".join([stage, *cells]) + " |")
    return [*lines, "", "wall s: the stage's wall-clock over every invocation where it counts one (the arms trained by TRL), else its "
            "last invocation's; ≈: the stage was resumed, and all its tokens are costed at the rate its last invocation measured; "
            "≥: resumed from a checkpoint that recorded no time, so only the last invocation's (a lower bound).", ""]


def provenance_sections(folders: list[Path], records: dict[Path, RunRecord]) -> list[str]:
    """One "Provenance" section per run folder with a manifest: each stage's command, finish time and inputs fingerprint."""
    lines = []
    for folder in folders:
        stages = records[folder].stage_entries
        if stages is None:
            continue
        source = "manifest.json" if len(folders) == 1 else f"{folder}/manifest.json"
        lines += ["## Provenance", "", f"Commands and inputs that produced these numbers (from {source}):", ""]
        for stage, entry in stages.items():
            lines.append(f"- `{stage}`: `{entry.get('command', '?')}` "
                         f"(finished {entry.get('finished', '?')}, inputs {entry.get('inputs_fingerprint', '?')})")
        lines.append("")
    return lines


def write_report(*run_dirs: str | Path, arms: Sequence[str] = (), comparisons: Sequence[str] = (), out: str | Path | None = None,
                 stopped: str | None = None, plan: str | Path | None = None) -> Path:
    """Write report.md and its plots for the run folders into the first of them (or ``out``); returns its path.

    ``arms``: ``NAME=MODEL[,MODEL...]`` specs; ``comparisons``: ``A:B`` specs (see ``ssb.stats.comparison``). ``plan``: a
    declared analysis plan's file (``ssb.stats.analysis_plan``), instead of ``arms`` and ``comparisons``.
    ``stopped``: why the run stopped early; by default the reason ``ssb run`` recorded in stats.json.
    A bad name or plan raises ValueError before anything is written.
    """
    if not run_dirs:
        raise ValueError("no run folder given")
    if plan is not None and (arms or comparisons):
        raise ValueError(f"--plan {plan} declares the arms and comparisons; give it without --arm and --compare")
    declared = load_plan(plan) if plan is not None else None
    folders = [Path(d) for d in run_dirs]
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such run folder")
        check_no_links(folder)  # what the report reads (and writes there) is the folder's own
    if len({folder.resolve() for folder in folders}) < len(folders):
        raise ValueError("the same run folder is given twice")
    out_dir = folders[0] if out is None else Path(out)
    models, summaries = load_all(folders)
    scores = score_loader(models)
    if declared is not None:
        section = plan_section(models, summaries, scores, declared)
    else:
        section = arms_section(models, summaries, scores, arms, comparisons) if arms or comparisons else None
    out_dir.mkdir(parents=True, exist_ok=True)
    records = {folder: RunRecord(folder) for folder in folders}
    adapters = {folder: record.evaluated_adapters() for folder, record in records.items()}
    trained_in = {label: training_folder((adapters[folder] or {}).get(model)) for label, (folder, model) in models.items()}
    rounds = rounds_sections(folders, out_dir)
    first = records[folders[0]]
    if stopped is None and first.rounds() is None:  # an iterated run says where it stopped in its rounds section
        stopped = first.stopped()
    note, engines = small_run_note(summaries, first.stats), engines_note(summaries)
    lines = [f"# SSB report: {', '.join(folder.name for folder in folders)}", "", *([note, ""] if note else []),
             *([engines, ""] if engines else []),
             *([f"**Stopped**: {stopped}.", ""] if stopped else []), *rounds, *(section.lines if section else [])]
    if summaries:
        benchmarks, markdown = table(summaries)
        resamples, seed = (declared.resamples, declared.seed) if declared is not None else (RESAMPLES, SEED)
        bars = accuracy_bars(with_models(section.arms if section else {}, base_first(summaries)), summaries, scores, resamples, seed)
        plot_accuracy(bars, benchmarks, out_dir / "accuracy.png")
        if section is not None and section.families:
            plot_comparisons(forest_rows(section.families), out_dir / COMPARISONS_FIGURE)
        lines += ["## pass@1 (%) ± 95% CI half-width (questions)", "", markdown, "", "![accuracy](accuracy.png)", ""]
        lengths = {label: RunRecord(folder).training_solution_length() if folder is not None else None for label, folder in trained_in.items()}
        lines += ["## Details", "", *details_table(summaries, lengths), ""]
        if not comparisons and declared is None:  # named comparisons replace the default family of every model against its base
            paired = base_differences(models, summaries, scores)
            if paired:
                lines += ["## Difference from the base model (paired, same questions)", "",
                          *difference_table(paired, "model", "questions gained / lost", "p"), ""]
        if any(a is not None for a in adapters.values()):
            lines += ["## Training compute per model", "",
                      "Summed over the training stages of the run folder that produced each adapter: each stage's wall time over every "
                      "invocation where it counts one (the arms trained by TRL), else its last invocation's; ≈: a generating stage was "
                      "resumed, and all its tokens are costed at the rate its last invocation measured; ≥: a stage resumed from a "
                      "checkpoint that recorded no time, so only its last invocation's (a lower bound).", "",
                      compute_table(models, trained_in), ""]
        diagnostics_markdown = diagnostics_table(trained_in)
        if diagnostics_markdown:
            lines += ["## Distillation diagnostics", "",
                      "From each adapter's distill/metrics.jsonl: mean of the first 3 -> mean of the last 3 steps that logged each value.", "",
                      diagnostics_markdown, ""]
    else:
        lines += ["No evaluation summaries under eval/ yet (run `ssb eval`).", ""]
    lines += training_data_section(folders)
    metrics = first.distill_metrics()
    if metrics:
        plot_training(metrics, out_dir / "training.png")
        lines += ["## Training", "", f"{len(metrics)} optimiser steps; loss {metrics[0]['loss']:.4f} -> {metrics[-1]['loss']:.4f}.", "",
                  "![training curves](training.png)", ""]
    lines += compute_section(first.stats) + provenance_sections(folders, records)
    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))  # beside a run that may be going on: never half a report
    return path
