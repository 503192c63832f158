"""The report's "Arms and comparisons" section: named arms and comparisons (``--arm``, ``--compare``), or a declared plan.

Ad hoc (``arms_section``), each comparison gets the test that fits it (``comparison.compare``: the sign test, or z where
the two sides average unlike), and all comparisons are one Holm family. Under a declared analysis plan
(``plan_section``, ``ssb.stats.analysis_plan``) the plan's test applies to every comparison, the primary comparisons come first
as the confirmatory family with the plan's alpha, and the secondary ones follow as an exploratory family of their own.
Both show, beside each interval over questions, the two-level bootstrap's interval over training runs and questions
(``ssb.stats.bootstrap``) wherever an arm pools several models. Under the tables, a forest plot of the same rows
(``ssb.report.plots``, which the report draws from what the section returns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ssb.report.plots import COMPARISONS_FIGURE
from ssb.report.tables import difference_table, runs_interval
from ssb.stats.analysis_plan import AnalysisPlan, PlanError
from ssb.stats.bootstrap import RESAMPLES, SEED
from ssb.stats.comparison import arm_pass_at_1, compare_arms, holm, parse_arms, parse_comparisons, resolve
from ssb.stats.engine_anchors import UNRECORDED, anchor_of, anchored, engine_key

DIFFERENCE_NOTE = ("A - B: A's per-question score minus B's, in points, averaged over the questions both answered, with a paired 95% CI "
                   "over questions. An arm's per-question score is the mean over its models (seeds) of each model's fraction of samples "
                   "correct. 95% CI (runs and questions): where an arm pools several models (training runs), the interval over questions "
                   "holds those very adapters fixed, but training again would give other adapters, and seeds of one recipe can score points "
                   "apart. This interval counts both: {resamples} times (seed {seed}), draw the questions with replacement (the same draw "
                   "for A and B, so the difference stays paired) and, within each arm, its runs with replacement; recompute the statistic; "
                   "keep the middle 95% (2.5th to 97.5th percentile). With three runs an arm's run-to-run spread rests on three values, so "
                   "even this interval is, if anything, narrow. \"—, one run\": an arm of one model, where it would repeat the interval "
                   "over questions.")
ADHOC_TEST_NOTE = ("p: exact two-sided sign test over the questions where the two scores differ, counting which side is higher "
                   "(McNemar's exact test when each arm is one model with one sample per question). Where the two scores average different "
                   "numbers of samples (three seeds against one), the sign test is biased towards the side with more (below 50% accuracy an "
                   "average lies above a single 0/1 score more often than below it), and p, marked (z), is the normal test of the mean "
                   "difference, the one the CI over questions inverts (an approximation for hundreds of questions, optimistic for a handful). "
                   "p is chosen per comparison and rests on questions only; a study that declares its analysis first uses `--plan`.")
ARMS_NOTE = DIFFERENCE_NOTE.format(resamples=RESAMPLES, seed=SEED) + " " + ADHOC_TEST_NOTE
PLAN_TESTS = {
    "sign": "the exact two-sided sign test over the questions where the two scores differ (McNemar's exact test for single models "
            "with one sample per question); it ignores the runs",
    "z": "the normal test of the mean difference over questions, the one the CI over questions inverts; it ignores the runs",
    "bootstrap": "the two-level bootstrap's two-sided p-value: twice the smaller share of resamples on either side of 0 (each count "
                 "plus one), the p that the interval over runs and questions inverts; for two single models, the bootstrap over questions",
}
COUNTS = "questions A better / B better"
ANCHORED_PRIMARY = "Primary, engine-anchored"
ANCHORED_NOTE = ("Engine-anchored: the comparisons above whose models were graded on more than one evaluation engine (the same "
                 "model and settings give other text on another CPU class), again with each model's per-question score minus that "
                 "of the plan's engine anchor graded on its engine (the reference model, graded by the same engine on the same "
                 "questions): (A - anchor of A) - (B - anchor of B). It takes each engine's effect on the reference model out of "
                 "every model that engine graded, assuming the engine moves every model's answers as it moved the reference "
                 "model's (it moves individual answers, so at best on average), at the price of the noise of the questions where "
                 "the anchors disagree; Holm's adjustment runs within each of these families. A sign test on anchored scores "
                 "counts a question where the two anchors disagree as a win or a loss even where A and B tie: prefer the "
                 "bootstrap. Comparisons whose models share one engine are not repeated (anchoring would not "
                 "change them), nor those of anchors alone (anchored, each is 0).")
FIGURE = f"![comparisons: A - B with both intervals]({COMPARISONS_FIGURE})"


@dataclass(frozen=True)
class ArmsSection:
    """The section's lines, and what the report's plots draw from it (``ssb.report.plots``)."""

    lines: list[str]
    arms: dict[str, list[str]]  # the arms named (--arm, or the plan's), in their order: {arm: model labels}
    families: list[tuple[str, list[tuple[str, str, dict]]]]  # (title, difference rows) per table, as printed; the
    # lines link COMPARISONS_FIGURE where any table has rows, which the report draws from these


def arm_table(arms: dict[str, list[str]], shown: Sequence[str], benchmarks: dict[str, set[str]], summaries, scores,
              resamples: int, seed: int) -> list[str]:
    lines = ["| arm | benchmark | pass@1 % | 95% CI (questions) | 95% CI (runs and questions) | each model's pass@1 % on the same questions |",
             "|---|---|---|---|---|---|"]
    for arm in shown:
        members = arms[arm]
        for benchmark in sorted(benchmarks[arm]):
            one_sample = len(members) == 1 and summaries[members[0]][benchmark]["samples_per_question"] == 1
            r = arm_pass_at_1({m: scores(m, benchmark) for m in members}, binary=one_sample, resamples=resamples, seed=seed)
            each = ", ".join(f"{m} {100 * v:.1f}" for m, v in r["per_model"].items())
            lines.append(f"| {arm} | {benchmark} | {100 * r['mean']:.1f} | [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] "
                         f"(n={r['n_questions']}) | {runs_interval(r['ci95_runs'], '—, one run', signed=False)} | {each} |")
    return lines


def difference_rows(pairs, arms, benchmarks_of, summaries, scores, test: str | None, resamples: int, seed: int) -> list[tuple[str, str, dict]]:
    """One row per pair and benchmark of ``benchmarks_of(a, b)``: ``compare_arms`` with the given test (None: chosen per row)."""
    return [(f"{a} - {b}", benchmark, compare_arms({m: scores(m, benchmark) for m in arms[a]}, {m: scores(m, benchmark) for m in arms[b]},
                                                   (samples(arms[a], benchmark, summaries), samples(arms[b], benchmark, summaries)),
                                                   test=test, resamples=resamples, seed=seed))
            for a, b in pairs for benchmark in benchmarks_of(a, b)]


def samples(members: Sequence[str], benchmark: str, summaries) -> list[int]:
    """Samples per question of each model of an arm, sorted: two arms average alike when these are equal."""
    return sorted(summaries[m][benchmark]["samples_per_question"] for m in members)


def arms_section(models, summaries, scores, arm_specs: Sequence[str], compare_specs: Sequence[str]) -> ArmsSection:
    """The "Arms and comparisons" section of ``--arm``/``--compare``: the comparisons table first, then each arm's pooled pass@1."""
    labels = {(str(folder), model): label for label, (folder, model) in models.items()}
    arms = parse_arms(arm_specs, labels)
    pairs = parse_comparisons(compare_specs, arms, labels)
    benchmarks = {arm: set.intersection(*(set(summaries[m]) for m in members)) for arm, members in arms.items()}
    lines, rows = ["## Arms and comparisons", ""], []
    if pairs:
        for a, b in pairs:
            if not benchmarks[a] & benchmarks[b]:
                raise ValueError(f"--compare {a}:{b}: no benchmark was evaluated for every model of both arms")
        rows = difference_rows(pairs, arms, lambda a, b: sorted(benchmarks[a] & benchmarks[b]), summaries, scores, None, RESAMPLES, SEED)
        lines += [*difference_table(rows, "A - B", COUNTS, "p"), "", FIGURE, "", ARMS_NOTE, ""]
    named = [spec.partition("=")[0] for spec in arm_specs]
    shown = [a for a in arms if a in named or any(a in pair for pair in pairs)]
    return ArmsSection([*lines, *arm_table(arms, shown, benchmarks, summaries, scores, RESAMPLES, SEED), ""],
                       {a: arms[a] for a in named}, [("Comparisons", rows)] if rows else [])


def plan_arms(plan: AnalysisPlan, labels) -> dict[str, list[str]]:
    """The plan's arms as model labels; a model that is not evaluated is refused, naming the plan and the arm."""
    arms, owner = {}, {}
    for arm, names in plan.arms.items():
        try:
            arms[arm] = [resolve(name, labels) for name in names]
        except ValueError as exc:
            raise PlanError(f"{plan.path}: arms.{arm}: {exc}") from None
        for label in arms[arm]:
            if label in owner:
                raise PlanError(f"{plan.path}: arms.{arm}: model {label!r} is already in arm {owner[label]!r}")
            owner[label] = arm
    return arms


def plan_section(models, summaries, scores, plan: AnalysisPlan) -> ArmsSection:
    """The "Arms and comparisons" section under a declared plan: its file and hash, the primary family, the secondary one, the arms."""
    labels = {(str(folder), model): label for label, (folder, model) in models.items()}
    arms = plan_arms(plan, labels)
    evaluated = {arm: set.intersection(*(set(summaries[m]) for m in members)) for arm, members in arms.items()}
    for arm, members in arms.items():
        for benchmark in plan.benchmarks or ():
            missing = [m for m in members if benchmark not in summaries[m]]
            if missing:
                raise PlanError(f"{plan.path}: benchmarks: {benchmark!r} is not evaluated for {', '.join(missing)} (arm {arm!r})")
    benchmarks = {arm: set(plan.benchmarks) if plan.benchmarks else found for arm, found in evaluated.items()}
    for field, pairs in (("primary", plan.primary), ("secondary", plan.secondary)):
        for a, b in pairs:
            if not benchmarks[a] & benchmarks[b]:
                raise PlanError(f"{plan.path}: {field}: '{a}:{b}': no benchmark was evaluated for every model of both arms")

    def rows(pairs):
        return difference_rows(pairs, arms, lambda a, b: sorted(benchmarks[a] & benchmarks[b]), summaries, scores, plan.test,
                               plan.resamples, plan.seed)

    primary, secondary = rows(plan.primary), rows(plan.secondary)
    anchored_families = engine_anchored(plan, arms, benchmarks, summaries, scores, labels)
    lines = ["## Arms and comparisons (declared analysis plan)", "",
             f"Plan: `{plan.path}`, sha256 `{plan.sha256}`. Applied as declared: the {plan.test} test for every comparison "
             f"(p: {PLAN_TESTS[plan.test]}); alpha {plan.alpha:g}; bootstrap {plan.resamples} resamples, seed {plan.seed}"
             f"{'; benchmarks ' + ', '.join(plan.benchmarks) if plan.benchmarks else ''}.", "",
             f"### Primary (declared in {plan.path})", "",
             *difference_table(primary, "A - B", COUNTS, f"p ({plan.test})", mark_test=False), "", verdict(primary, plan.alpha), ""]
    if secondary:
        lines += [f"### Secondary, exploratory (declared in {plan.path})", "",
                  *difference_table(secondary, "A - B", COUNTS, f"p ({plan.test})", mark_test=False), "",
                  f"Exploratory: Holm's adjustment here runs over these {len(secondary)} rows only, apart from the primary family, so "
                  "that they neither dilute it nor borrow from it; a small p here suggests what a later plan might declare, it settles "
                  "nothing.", ""]
    for title, family in anchored_families:
        lines += [f"### {title} (declared in {plan.path}: engine_anchors)", "",
                  *difference_table(family, "A - B, anchored", COUNTS, f"p ({plan.test})", mark_test=False), ""]
    if anchored_families:
        anchored_primary = dict(anchored_families).get(ANCHORED_PRIMARY, [])
        if anchored_primary:
            lines += [verdict(anchored_primary, plan.alpha, "Engine-anchored, by the plan's rule"), "",
                      across_engines(primary, anchored_primary, plan.alpha), ""]
        lines += [ANCHORED_NOTE, ""]
    unanchored = engines_unanchored(plan, arms, benchmarks, summaries)
    if unanchored:
        lines += [unanchored, ""]
    lines += [FIGURE, ""]
    if plan.test == "sign":
        unlike = [f"{a} - {b} ({benchmark})" for a, b in plan.primary + plan.secondary for benchmark in sorted(benchmarks[a] & benchmarks[b])
                  if samples(arms[a], benchmark, summaries) != samples(arms[b], benchmark, summaries)]
        if unlike:
            lines += [f"The declared sign test is biased towards the side that averages more samples per question (three seeds against "
                      f"one model) in: {', '.join(unlike)}; its p there is applied as declared, not corrected.", ""]
    lines += [DIFFERENCE_NOTE.format(resamples=plan.resamples, seed=plan.seed), ""]
    families = [("Primary", primary), *([("Secondary, exploratory", secondary)] if secondary else []), *anchored_families]
    return ArmsSection([*lines, *arm_table(arms, list(arms), benchmarks, summaries, scores, plan.resamples, plan.seed), ""],
                       arms, families)


def engine_anchored(plan: AnalysisPlan, arms, benchmarks, summaries, scores, labels) -> list[tuple[str, list[tuple[str, str, dict]]]]:
    """The plan's comparisons whose models were graded on more than one engine, again on scores anchored on each engine's
    reference model (``ssb.stats.engine_anchors``): (title, rows) for the primary and the secondary ones that have any."""
    if not plan.engine_anchors:
        return []
    try:
        anchors = [resolve(name, labels) for name in plan.engine_anchors]
        anchor = anchor_of(anchors, summaries)

        def of(arm: str, benchmark: str) -> set[str]:
            return {anchor(m, benchmark) for m in arms[arm]}

        def anchored_scores(model: str, benchmark: str) -> dict[str, float]:
            base = anchor(model, benchmark)
            return anchored(scores(model, benchmark), scores(base, benchmark), model, base, benchmark)

        def repeated(a: str, b: str) -> list[str]:  # the benchmarks where A's and B's models met more than one engine
            if set(arms[a] + arms[b]) <= set(anchors):  # anchors against anchors: 0 by construction
                return []
            return [benchmark for benchmark in sorted(benchmarks[a] & benchmarks[b]) if len(of(a, benchmark) | of(b, benchmark)) > 1]

        families = []
        for title, pairs in ((ANCHORED_PRIMARY, plan.primary), ("Secondary, engine-anchored", plan.secondary)):
            rows = difference_rows(pairs, arms, repeated, summaries, anchored_scores, plan.test, plan.resamples, plan.seed)
            if rows:
                families.append((title, rows))
    except ValueError as exc:
        raise PlanError(f"{plan.path}: engine_anchors: {exc}") from None
    return families


def across_engines(primary: list[tuple[str, str, dict]], anchored_primary: list[tuple[str, str, dict]], alpha: float) -> str:
    """The plan's rule where primary comparisons were repeated anchored: a repeated one counts only where its plain and its
    anchored row are both significant (Holm within each family) with the same sign; one whose models share an engine is
    decided by its plain row."""
    plain = {(name, benchmark): (p < alpha, d["mean"]) for (name, benchmark, d), p in zip(primary, holm([d["p_value"] for _, _, d in primary]))}
    again = {(name, benchmark): (p < alpha, d["mean"])
             for (name, benchmark, d), p in zip(anchored_primary, holm([d["p_value"] for _, _, d in anchored_primary]))}
    established, fragile = [], []
    for key, (significant, mean) in plain.items():
        if key not in again:
            established += [key] if significant else []
        elif significant and again[key][0] and (mean > 0) == (again[key][1] > 0):
            established.append(key)
        elif significant or again[key][0]:
            fragile.append(key)
    named = lambda keys: ", ".join(f"{name} ({benchmark})" for name, benchmark in keys)  # noqa: E731
    return (f"**By the plan's rule, across engines** (a primary comparison repeated anchored counts only where its plain and its "
            f"anchored row are both significant, with the same sign): "
            f"{'established: ' + named(established) if established else 'none is established'}"
            f"{'; not robust to the engine: ' + named(fragile) if fragile else ''}.")


def engines_unanchored(plan: AnalysisPlan, arms, benchmarks, summaries) -> str | None:
    """A line where the compared models were graded on more than one engine (or some record none) and the plan names no
    engine anchors: their differences then include the engines' own, unmeasured."""
    if plan.engine_anchors:
        return None
    compared = {arm for pair in plan.primary + plan.secondary for arm in pair}
    keys = {engine_key(summaries[m][benchmark]) for arm in compared for m in arms[arm] for benchmark in benchmarks[arm] if benchmark in summaries[m]}
    if len(keys) < 2:
        return None
    unrecorded = " (or some record none)" if UNRECORDED in keys else ""
    return (f"The compared models were graded on {len(keys)} engines{unrecorded} and this plan names no `engine_anchors`: a difference "
            "between models of different engines includes the engines' own, and nothing here measures it.")


def verdict(primary: list[tuple[str, str, dict]], alpha: float, rule: str = "By the plan's rule") -> str:
    """The plan's rule applied: which primary rows have a Holm p below alpha over the primary family."""
    adjusted = holm([d["p_value"] for _, _, d in primary])
    significant = [f"{name} ({benchmark})" for (name, benchmark, _), p in zip(primary, adjusted) if p < alpha]
    return (f"**{rule}** (Holm p over the {len(primary)} primary row{'s' if len(primary) != 1 else ''} below alpha = "
            f"{alpha:g}): {'significant: ' + ', '.join(significant) if significant else 'none is significant'}.")

