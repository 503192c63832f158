"""Markdown tables and plotting shared by the report's sections (``ssb.report``, ``ssb.report.rounds``): pure formatting."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ssb.packaged_models import default_cache_dir
from ssb.runfolder.artifacts import refuse_link
from ssb.runfolder.file_modes import umask_mode
from ssb.stats.comparison import format_p, holm


def cell(summary: dict | None) -> str:
    if summary is None:
        return "n/a"
    p = summary["pass@1"]
    half = (p["ci95"][1] - p["ci95"][0]) / 2
    return f"{100 * p['mean']:.1f} ± {100 * half:.1f} (n={p['n_questions']})"


def runs_interval(ci: list[float] | None, one: str, signed: bool) -> str:
    """A two-level bootstrap interval in points, or what stands in its place where a side has one run."""
    if ci is None:
        return one
    return f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if signed else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def difference_table(rows: list[tuple[str, str, dict]], first: str, counts: str, p_name: str, mark_test: bool = True) -> list[str]:
    """(name, benchmark, paired difference) rows as a table; with several rows, Holm's p beside each raw p and a line saying so.

    Rows carrying ``ci95_runs`` (arms, ``comparison.compare_arms``) get the interval over runs and questions beside the one
    over questions. ``mark_test``: mark a z test's p with (z); off where the table's p column names its one test.
    """
    several = len(rows) > 1
    runs = any("ci95_runs" in d for _, _, d in rows)
    adjusted = holm([d["p_value"] for _, _, d in rows])
    lines = [f"| {first} | benchmark | difference (points) | 95% CI{' (questions)' if runs else ''} |"
             + (" 95% CI (runs and questions) |" if runs else "") + f" {counts} | {p_name} |" + (" Holm p |" if several else ""),
             "|---|---|---|---|---|---|" + ("---|" if runs else "") + ("---|" if several else "")]
    for (name, benchmark, d), p_holm in zip(rows, adjusted):
        row = f"| {name} | {benchmark} | {100 * d['mean']:+.1f} | [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] "
        if runs:
            row += f"| {runs_interval(d.get('ci95_runs'), '—, one run each', signed=True)} "
        marked = mark_test and d.get("test") == "z"
        row += f"| {d['better']} / {d['worse']} (n={d['n_questions']}) | {format_p(d['p_value'])}{' (z)' if marked else ''} |"
        lines.append(row + (f" {format_p(p_holm)} |" if several else ""))
    if several:
        lines += ["", f"**Multiple comparisons**: {len(rows)} comparisons in this table (one per pair and benchmark). Holm p is each p-value "
                      f"adjusted by Holm's step-down method over all {len(rows)}, bounding the chance of any false positive among them; "
                      "judge significance by it, not by the raw p."]
    return lines


def save_figure(fig, path: Path) -> None:
    """Save a plot under a temporary name beside ``path``, then rename it into place: a reader never sees half a PNG. The
    name is this write's own, so two reports of one folder at once do not write into each other's file."""
    refuse_link(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.png")
    try:
        os.fchmod(fd, umask_mode())
        os.close(fd)
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pyplot():
    # matplotlib caches fonts under the home folder unless told otherwise: keep it in ssb's cache.
    os.environ.setdefault("MPLCONFIGDIR", str(default_cache_dir() / "matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
