"""The per-round curve of an iterated run (``rounds`` > 1, ``ssb.rounds``), for ``ssb report``.

Read from ``RUN_DIR/rounds.json`` and each round's run folder: per round and benchmark, the yield funnel
(questions, mixed, kept, the refinements dropped as wrong, without an answer, truncated or, where
``refine.answer_first_chars`` or ``refine.prompt_terms`` dropped any, answering first or using the hinted
prompt's terms, and trained on: kept less held out and too short), the mean length of the solutions it
trained on, and the pass@1 of its trained model with the 95% CI and the mean completion length; round 0
is the original base model, evaluated in round 1's folder. ``rounds.png`` plots pass@1 per round with CI
error bars. Each round is compared with the one before it, with round 1 and
with round 0 on the same questions (paired difference, McNemar's test or, between unequal sample counts, the z
test; Holm's adjustment over the table), like the report's other paired tables. A report on several iterated
runs (SSB rounds beside SFT rounds, say) gives each its own section and plot, then compares round r of the
first run with round r of each other.
"""

from __future__ import annotations

from pathlib import Path

from ssb.report.tables import cell, difference_table, pyplot, save_figure
from ssb.runfolder.record import ROUNDS_FILE, RunRecord
from ssb.stats.comparison import compare

DASH = "-"


def evaluated_rounds(run_dir: Path) -> list[tuple[int, Path, str]]:
    """(round, run folder, evaluated model) of the curve: round 0 is the base model of round 1's folder."""
    record = RunRecord(run_dir).rounds()
    # Runs recorded before rounds.json named the evaluated adapter all evaluated it as "ssb".
    return [(0, run_dir, "base"), *((r["round"], run_dir / r["folder"], r.get("evaluated", "ssb")) for r in record["per_round"])]


def _summary(folder: Path, model: str, benchmark: str) -> dict | None:
    return RunRecord(folder).summary(model, benchmark)


def _samples(folder: Path, model: str, benchmark: str) -> list[int]:
    """The samples per question behind a model's per-question scores, as ``comparison.compare`` takes them."""
    return [_summary(folder, model, benchmark)["samples_per_question"]]


def _scores(folder: Path, model: str, benchmark: str) -> dict[str, float]:
    return RunRecord(folder).per_question_scores(model, benchmark)


def _benchmarks(run_dir: Path) -> list[str]:
    return RunRecord(run_dir).benchmarks_of("base")


def _stats(folder: Path) -> dict:
    return RunRecord(folder).stats


def _drop_reasons(run_dir: Path) -> list[str]:
    """The refinement drop reasons of the table: answer-first and prompt-terms only where some round dropped one
    (refine.answer_first_chars and refine.prompt_terms are off by default, and stats written before them lack the reasons)."""
    dropped = [_stats(folder).get("refine", {}).get("dropped", {}) for r, folder, _ in evaluated_rounds(run_dir) if r > 0]
    return ["wrong", "no-answer", "truncated"] + [why for why in ("answer-first", "prompt-terms") if any(d.get(f"refinement-{why}") for d in dropped)]


def rounds_table(run_dir: Path, benchmarks: list[str]) -> list[str]:
    reasons = _drop_reasons(run_dir)
    header = ["round", "benchmark", "questions", "mixed", "kept", "refinements " + " / ".join(reasons).replace("-", " "), "trained on",
              "training solution length", "pass@1 % ± 95% CI half-width (n)", "mean completion tokens"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r, folder, model in evaluated_rounds(run_dir):
        stats = _stats(folder)
        refine, distill = stats.get("refine"), stats.get("distill", {})
        funnel = [str(refine[k]) for k in ("questions", "mixed", "kept")] if r > 0 and refine else [DASH] * 3
        # Why mixed questions kept no refinement: a round whose refiner has changed shows it here first.
        funnel.append(" / ".join(str(refine["dropped"].get(f"refinement-{why}", 0)) for why in reasons) if r > 0 and refine else DASH)
        # Kept solutions less those held out and those under distill.min_solution_tokens.
        funnel.append(str(distill["examples"]) if r > 0 and "examples" in distill else DASH)
        length = (RunRecord(folder).training_solution_length() if r > 0 and "examples" in distill else None) or DASH  # only what it trained on
        for benchmark in benchmarks or [DASH]:  # a run stopped in round 1 evaluated nothing
            summary = _summary(folder, model, benchmark)
            tokens = f"{summary['mean_completion_tokens']:.0f}" if summary else DASH
            name = "0 (base)" if r == 0 else str(r)
            lines.append(f"| {name} | {benchmark} | {' | '.join(funnel)} | {length} | {cell(summary) if summary else 'not evaluated'} | {tokens} |")
    return lines


def round_differences(run_dir: Path, benchmarks: list[str]) -> list[tuple[str, str, dict]]:
    """Each evaluated round minus the round before it, minus round 1 (what rounds after the first add) and minus round 0,
    on the questions both answered; each pair once."""
    rows = []
    for benchmark in benchmarks:
        points = [(r, RunRecord(folder).per_question_scores(model, benchmark), _samples(folder, model, benchmark))
                  for r, folder, model in evaluated_rounds(run_dir) if _summary(folder, model, benchmark)]
        earlier = {r: (scores, n) for r, scores, n in points}
        for (r_prev, _, _), (r, scores, n) in zip(points, points[1:]):
            for base_round in dict.fromkeys((r_prev, 1, 0)):
                if base_round < r and base_round in earlier:
                    prev, n_prev = earlier[base_round]
                    rows.append((f"round {r} - round {base_round}", benchmark, compare(scores, prev, (n, n_prev))))
    return rows


def plot_rounds(run_dir: Path, benchmarks: list[str], path: Path) -> None:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for benchmark in benchmarks:
        points = [(r, _summary(folder, model, benchmark)) for r, folder, model in evaluated_rounds(run_dir)]
        points = [(r, s["pass@1"]) for r, s in points if s is not None]
        means = [100 * p["mean"] for _, p in points]
        errors = [[100 * (p["mean"] - p["ci95"][0]) for _, p in points], [100 * (p["ci95"][1] - p["mean"]) for _, p in points]]
        ax.errorbar([r for r, _ in points], means, yerr=errors, marker="o", capsize=4, label=benchmark)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (0 = base model)")
    ax.set_ylabel("pass@1 (%), 95% CI")
    ax.set_title("Accuracy after each round")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def across_runs(named: dict[str, Path]) -> list[tuple[str, str, dict]]:
    """Round r of the first run minus round r of each other run, for every trained round and benchmark both evaluated."""
    (first, first_dir), *others = named.items()

    def curve(run_dir: Path) -> dict[tuple[int, str], tuple[Path, str]]:
        benchmarks = _benchmarks(run_dir)
        return {(r, b): (folder, model) for r, folder, model in evaluated_rounds(run_dir) if r > 0 for b in benchmarks if _summary(folder, model, b)}

    mine = curve(first_dir)
    rows = []
    for name, run_dir in others:
        theirs = curve(run_dir)
        for r, benchmark in sorted(mine.keys() & theirs.keys()):
            rows.append((f"round {r}: {first} - {name}", benchmark,
                         compare(_scores(*mine[r, benchmark], benchmark), _scores(*theirs[r, benchmark], benchmark),
                                 (_samples(*mine[r, benchmark], benchmark), _samples(*theirs[r, benchmark], benchmark)))))
    return rows


def rounds_sections(folders: list[Path], out_dir: Path) -> list[str]:
    """The "Rounds" section of every iterated run among ``folders``; with several, each under its folder's name with its own
    plot (``rounds-NAME.png``), then round r of the first run against round r of each other on the same questions."""
    if len(folders) == 1:
        return rounds_section(folders[0], out_dir)
    # Folder names tell the runs apart (the report refuses two folders of the same name).
    named = {folder.name: folder for folder in folders if RunRecord(folder).rounds() is not None}
    lines = [line for name, folder in named.items() for line in rounds_section(folder, out_dir, name)]
    if len(named) < 2:
        return lines
    rows = across_runs(named)
    if rows:
        lines += ["## Rounds across runs (paired, same questions)", "",
                  f"Round r of {next(iter(named))} minus round r of each other run, on the questions both evaluated.", "",
                  *difference_table(rows, "rounds", "questions gained / lost", "p"), ""]
    return lines


def rounds_section(run_dir: Path, out_dir: Path, name: str | None = None) -> list[str]:
    """The report's "Rounds" section (and ``out_dir/rounds.png``, or ``rounds-NAME.png`` for a named run); empty for a run
    without rounds."""
    record = RunRecord(run_dir).rounds()
    if record is None:
        return []
    benchmarks = _benchmarks(run_dir)
    plot, suffix = ("rounds.png", "") if name is None else (f"rounds-{name}.png", f": {name}")
    lines = [f"## Rounds{suffix}", "",
             f"{len(record['per_round'])} of {record['rounds']} rounds run, training questions: {record['rounds_data']} "
             f"({ROUNDS_FILE} lists each round's folder, model and data slice). Round r's model is round r-1's with its adapter merged in; "
             "its row shows its refine funnel and the adapter it trained, evaluated on the same questions as every round.", ""]
    if record["stopped"]:
        lines += [f"**Stopped** at {record['stopped']}.", ""]
    lines += [*rounds_table(run_dir, benchmarks), ""]
    if benchmarks:
        plot_rounds(run_dir, benchmarks, out_dir / plot)
        lines += [f"![pass@1 per round]({plot})", ""]
    differences = round_differences(run_dir, benchmarks)
    if differences:
        lines += [f"### Each round against the previous one, round 1 and round 0 (paired, same questions){suffix}", "",
                  *difference_table(differences, "rounds", "questions gained / lost", "p"), ""]
    return lines
