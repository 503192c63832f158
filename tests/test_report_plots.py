"""The report's plots: the bars, points and intervals they are drawn from, worked out here from per-question scores, and
that each drawing writes a PNG (what it looks like is checked by eye, not here)."""

import pytest

from bootstrap_reference import reference_interval, reference_resample
from ssb.report.plots import Bar, accuracy_bars, distinct_colours, forest_rows, plot_accuracy, plot_comparisons, with_models

# Per-question scores on q0..q3 (s2 averages two samples per question); s0 alone was also evaluated on math500.
SCORES = {("s0", "gsm8k"): [1, 1, 0, 1], ("s1", "gsm8k"): [1, 0, 0, 0], ("s2", "gsm8k"): [1, 0.5, 0.5, 0],
          ("base", "gsm8k"): [0, 1, 0, 0], ("s0", "math500"): [1, 0]}


def summary(values: list[float]) -> dict:
    """A summary as the pass@1 table reads it; its interval is made up, and must come through untouched."""
    mean = sum(values) / len(values)
    return {"pass@1": {"mean": mean, "ci95": [mean / 2, (1 + mean) / 2], "n_questions": len(values)}, "samples_per_question": 1}


SUMMARIES: dict = {}
for (model, benchmark), values in SCORES.items():
    SUMMARIES.setdefault(model, {})[benchmark] = summary(values)


def scores(model: str, benchmark: str) -> dict[str, float]:
    return {f"q{i}": v for i, v in enumerate(SCORES[model, benchmark])}


def test_a_bar_per_arm_pools_its_models_with_each_as_a_point_and_a_model_in_no_arm_is_its_own():
    arms = with_models({"ssb": ["s0", "s1", "s2"]}, ["base", "s0", "s1", "s2"])
    assert arms == {"ssb": ["s0", "s1", "s2"], "base": ["base"]}
    bars = {(bar.arm, bar.benchmark): bar for bar in accuracy_bars(arms, SUMMARIES, scores, resamples=300, seed=4)}
    assert list(bars) == [("ssb", "gsm8k"), ("ssb", "math500"), ("base", "gsm8k")]
    # Seed means per question 1, 1/2, 1/6, 1/3: pass@1 2/4; each seed's own 3/4, 1/4, 1/2; the interval over runs and
    # questions from the reference loop with the same draws.
    pooled = bars["ssb", "gsm8k"]
    assert pooled.mean == pytest.approx(100 * 2 / 4) and pooled.over_runs and pooled.of == 3
    assert pooled.models == pytest.approx({"s0": 75.0, "s1": 25.0, "s2": 50.0})
    runs = [SCORES[m, "gsm8k"] for m in ("s0", "s1", "s2")]
    assert pooled.ci == pytest.approx(tuple(100 * v for v in reference_interval(reference_resample(runs, resamples=300, seed=4))))
    # One model evaluated: its summary's pass@1 and interval, as in the pass@1 table, and the arm's size kept.
    assert bars["ssb", "math500"] == Bar("ssb", "math500", 50.0, (25.0, 75.0), False, {"s0": 50.0}, 3)
    assert bars["base", "gsm8k"] == Bar("base", "gsm8k", 25.0, (12.5, 62.5), False, {"base": 25.0}, 1)


def test_forest_rows_are_the_tables_rows_in_points_family_by_family():
    d = {"mean": 0.05, "ci95": [-0.01, 0.11], "ci95_runs": [-0.03, 0.14]}
    one = {"mean": -0.2, "ci95": [-0.3, -0.1], "ci95_runs": None}
    rows = forest_rows([("Primary", [("a - b", "gsm8k", d)]), ("Secondary", [("c - b", "gsm8k", one), ("c - b", "math500", one)])])
    assert [(r.family, r.name, r.benchmark) for r in rows] == [("Primary", "a - b", "gsm8k"), ("Secondary", "c - b", "gsm8k"),
                                                               ("Secondary", "c - b", "math500")]
    assert (rows[0].mean, *rows[0].ci, *rows[0].ci_runs) == pytest.approx((5.0, -1.0, 11.0, -3.0, 14.0))
    assert rows[1].ci_runs is None and rows[1].ci == pytest.approx((-30.0, -10.0))


def test_colours_never_repeat_however_many_arms():
    for n in (3, 16, 20, 33):
        assert len({tuple(c) for c in distinct_colours(n)}) == n


def test_the_plots_write_pngs(tmp_path):
    arms = with_models({"ssb": ["s0", "s1", "s2"]}, ["base"])
    plot_accuracy(accuracy_bars(arms, SUMMARIES, scores, resamples=200, seed=0), ["gsm8k", "math500"], tmp_path / "accuracy.png")
    d = {"mean": 0.05, "ci95": [-0.01, 0.11], "ci95_runs": [-0.03, 0.14]}
    rows = forest_rows([("Primary", [("ssb - base", "gsm8k", d)]), ("Secondary", [("s0 - base", "math500", {**d, "ci95_runs": None})])])
    plot_comparisons(rows, tmp_path / "comparisons.png")
    for name in ("accuracy.png", "comparisons.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / name).stat().st_size > 1000


def test_two_reports_writing_one_plot_at_once_each_finish(tmp_path):
    """Two ``ssb report`` runs on one folder save the same plot at once: each writes a temporary file of its own, so the
    one that renames its file into place second does not find it taken away by the first."""
    from ssb.report.tables import pyplot, save_figure

    plt = pyplot()
    inner, outer = plt.figure(), plt.figure()
    path = tmp_path / "training.png"
    save = outer.savefig

    def savefig_while_another_report_saves(*args, **kwargs):
        save(*args, **kwargs)
        save_figure(inner, path)  # the other process, between this one's write and its rename

    outer.savefig = savefig_while_another_report_saves
    save_figure(outer, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["training.png"]
