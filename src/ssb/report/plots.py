"""The report's accuracy and comparison plots (``ssb report``): the numbers each is drawn from, then the drawing.

``accuracy.png``: one panel per benchmark, one row per arm (``ssb.stats.comparison``: the training seeds of a recipe pooled;
a model in no arm is a row of its own), named on the axis, so that a study of sixteen arms needs no legend to tell them
apart. The bar is the arm's pass@1, its error bar the 95% CI: over runs and questions (``ssb.stats.bootstrap``) where the bar
pools several models, over questions otherwise (for one model, its evaluation summary's, as in the pass@1 table). Each
model a bar pools is a point at its own pass@1 on the bar's questions. On a benchmark where only some of an arm's
models were evaluated, its bar pools those and says how many.

``comparisons.png``: a forest plot of the comparisons asked: for each, A - B in points with the interval over questions
(a thick band) and the one over runs and questions (a thin capped line, where an arm pools several runs), a line at 0,
one panel per benchmark, and each family (a plan's primary, then its secondary) under a heading of its own.

``accuracy_bars`` and ``forest_rows`` are the numbers the plots draw; the drawing functions only place them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ssb.report.tables import pyplot, save_figure
from ssb.stats.comparison import arm_pass_at_1

COMPARISONS_FIGURE = "comparisons.png"
FAMILY_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


@dataclass(frozen=True)
class Bar:
    """One arm on one benchmark, in points of pass@1."""

    arm: str
    benchmark: str
    mean: float
    ci: tuple[float, float]
    over_runs: bool  # ci is the two-level bootstrap's, over runs and questions (the bar pools several models)
    models: dict[str, float]  # each model the bar pools: its pass@1 on the bar's questions
    of: int  # models in the arm: more than len(models) where some were not evaluated on this benchmark


@dataclass(frozen=True)
class ForestRow:
    """One comparison on one benchmark, in points: A - B with its interval over questions and, where an arm pools runs,
    the one over runs and questions."""

    family: str
    name: str
    benchmark: str
    mean: float
    ci: tuple[float, float]
    ci_runs: tuple[float, float] | None


def with_models(arms: Mapping[str, list[str]], models: Sequence[str]) -> dict[str, list[str]]:
    """The arms, then every model in none of them as an arm of its own, in the order of ``models``."""
    pooled = {m for members in arms.values() for m in members}
    return {**arms, **{m: [m] for m in models if m not in pooled}}


def points(interval: Sequence[float]) -> tuple[float, float]:
    return 100 * interval[0], 100 * interval[1]


def accuracy_bars(arms: Mapping[str, list[str]], summaries: Mapping[str, Mapping[str, dict]],
                  scores: Callable[[str, str], dict[str, float]], resamples: int, seed: int) -> list[Bar]:
    """A bar per arm and benchmark that any of its models was evaluated on, pooling the models evaluated there.

    ``arms``: {arm: its model labels}, every model to draw in one; ``scores(model, benchmark)``: per-question scores.
    One model: its summary's pass@1 and CI. Several: ``comparison.arm_pass_at_1`` with the bootstrap's ``resamples`` and
    ``seed`` (those of the report's arms table, so the same interval)."""
    bars = []
    for arm, members in arms.items():
        for benchmark in sorted({b for m in members for b in summaries[m]}):
            evaluated = [m for m in members if benchmark in summaries[m]]
            if len(evaluated) == 1:
                p = summaries[evaluated[0]][benchmark]["pass@1"]
                bars.append(Bar(arm, benchmark, 100 * p["mean"], points(p["ci95"]), False, {evaluated[0]: 100 * p["mean"]}, len(members)))
                continue
            r = arm_pass_at_1({m: scores(m, benchmark) for m in evaluated}, binary=False, resamples=resamples, seed=seed)
            bars.append(Bar(arm, benchmark, 100 * r["mean"], points(r["ci95_runs"]), True,
                            {m: 100 * v for m, v in r["per_model"].items()}, len(members)))
    return bars


def forest_rows(families: Sequence[tuple[str, Sequence[tuple[str, str, dict]]]]) -> list[ForestRow]:
    """The rows of the report's comparison tables ((title, [(name, benchmark, paired difference)]) per family), in points."""
    return [ForestRow(family, name, benchmark, 100 * d["mean"], points(d["ci95"]),
                      None if d.get("ci95_runs") is None else points(d["ci95_runs"]))
            for family, rows in families for name, benchmark, d in rows]


def distinct_colours(n: int) -> list:
    """``n`` colours, none repeated: tab10's, then tab20's lighter ones, beyond twenty evenly spaced hues."""
    plt = pyplot()
    if n <= 20:
        tab20 = plt.get_cmap("tab20").colors
        return [*tab20[0::2], *tab20[1::2]][:n]
    return [plt.get_cmap("turbo")(i / (n - 1)) for i in range(n)]


def plot_accuracy(bars: Sequence[Bar], benchmarks: Sequence[str], path: Path) -> None:
    """``accuracy_bars`` drawn: arms as rows (in their order, top down), one panel per benchmark."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    arms = list(dict.fromkeys(bar.arm for bar in bars))
    row = {arm: i for i, arm in enumerate(arms)}
    colour = dict(zip(arms, distinct_colours(len(arms))))
    fig, axes = plt.subplots(1, len(benchmarks), sharey=True, squeeze=False, layout="constrained",
                             figsize=(1.5 + 4.2 * len(benchmarks), 1.6 + 0.3 * len(arms)))
    for ax, benchmark in zip(axes[0], benchmarks):
        drawn = [bar for bar in bars if bar.benchmark == benchmark]
        for bar in drawn:
            y = row[bar.arm]
            ax.barh(y, bar.mean, height=0.7, color=colour[bar.arm], alpha=0.85)
            ax.errorbar(bar.mean, y, xerr=[[bar.mean - bar.ci[0]], [bar.ci[1] - bar.mean]], fmt="none", ecolor="black",
                        elinewidth=1.2, capsize=3)
            if len(bar.models) > 1:
                spread = [y + 0.44 * (i / (len(bar.models) - 1) - 0.5) for i in range(len(bar.models))]
                ax.scatter(list(bar.models.values()), spread, s=18, facecolor="white", edgecolor="black", linewidth=0.9, zorder=3)
            note = f"{bar.mean:.1f}" + (f" ({len(bar.models)} of {bar.of} models)" if len(bar.models) < bar.of else "")
            ax.annotate(note, (bar.ci[1], y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
        for arm in arms:
            if all(bar.arm != arm for bar in drawn):
                ax.annotate("not evaluated", (0, row[arm]), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7,
                            color="grey")
        longest = max((bar for bar in drawn), key=lambda bar: bar.ci[1], default=None)
        high = longest.ci[1] if longest else 100.0
        ax.set_xlim(0, high * (1.42 if any(len(bar.models) < bar.of for bar in drawn) else 1.18) + 1)
        ax.set_title(benchmark)
        ax.set_xlabel("pass@1 (%)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].set_yticks(range(len(arms)), arms)
    axes[0][0].set_ylim(len(arms) - 0.5, -0.5)  # the first arm on top
    pooled = any(bar.over_runs for bar in bars)
    handles = [Patch(color="grey", alpha=0.6, label="pass@1 of the arm (its models pooled per question)" if pooled else "pass@1"),
               Line2D([], [], color="black", marker="|", markersize=8,
                      label="95% CI: over runs and questions where the bar pools several models, else over questions" if pooled
                      else "95% CI over questions")]
    if pooled:
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="black",
                              label="each pooled model's pass@1"))
    fig.legend(handles=handles, loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    fig.suptitle(f"pass@1 per {'arm' if pooled else 'model'} and benchmark")
    save_figure(fig, path)
    plt.close(fig)


def plot_comparisons(rows: Sequence[ForestRow], path: Path) -> None:
    """``forest_rows`` drawn: a row per comparison (each family under its heading where there are several), a panel per
    benchmark."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    families = list(dict.fromkeys(r.family for r in rows))
    labels, y_of, headings = [], {}, []
    for family in families:
        if len(families) > 1:
            headings.append(len(labels))
            labels.append(family)
        for name in dict.fromkeys(r.name for r in rows if r.family == family):
            y_of[family, name] = len(labels)
            labels.append(name)
    benchmarks = sorted({r.benchmark for r in rows})
    fig, axes = plt.subplots(1, len(benchmarks), sharex=True, sharey=True, squeeze=False, layout="constrained",
                             figsize=(2.0 + 4.5 * len(benchmarks), 1.7 + 0.32 * len(labels)))
    for ax, benchmark in zip(axes[0], benchmarks):
        for r in (r for r in rows if r.benchmark == benchmark):
            y, colour = y_of[r.family, r.name], FAMILY_COLOURS[families.index(r.family) % len(FAMILY_COLOURS)]
            ax.plot(r.ci, [y, y], color=colour, linewidth=7, alpha=0.45, solid_capstyle="butt")
            if r.ci_runs is not None:
                ax.errorbar(r.mean, y, xerr=[[r.mean - r.ci_runs[0]], [r.ci_runs[1] - r.mean]], fmt="none", ecolor="black",
                            elinewidth=1, capsize=4)
            ax.plot(r.mean, y, marker="D", color="black", markersize=5, linestyle="none")
        ax.axvline(0, color="black", linewidth=0.8)
        for heading in headings[1:]:
            ax.axhline(heading - 0.5, color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(benchmark)
        ax.set_xlabel("A - B (points of pass@1)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].set_yticks(range(len(labels)), labels)
    for heading in headings:
        axes[0][0].get_yticklabels()[heading].set_fontweight("bold")
    axes[0][0].set_ylim(len(labels) - 0.5, -0.5)
    band = FAMILY_COLOURS[0] if len(families) == 1 else "grey"
    handles = [Line2D([], [], linestyle="none", marker="D", color="black", markersize=5, label="A - B"),
               Line2D([], [], color=band, linewidth=7, alpha=0.45, label="95% CI over questions")]
    if any(r.ci_runs is not None for r in rows):
        handles.append(Line2D([], [], color="black", linewidth=1, marker="|", markersize=9, label="95% CI over runs and questions"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Paired differences, A - B")
    save_figure(fig, path)
    plt.close(fig)
