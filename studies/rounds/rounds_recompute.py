"""Recompute the iterated rounds' curves and paired comparisons from their committed exports alone.

    python studies/rounds/rounds_recompute.py [--out DIR] [NAME ...]

Each NAME is a folder of studies/rounds/results/ written by ``evidence_export.py rounds``
(default: the SSB rounds, then the SFT rounds). Each is unpacked into a temporary folder laid out as
its run folder (rounds.json; per round its stats and every evaluation's samples and summary), and
the report's rounds sections are written for them into DIR/report.md with their plots: per arm the
per-round table and curve, each round against the previous one, round 1 and round 0; then round r of
the first arm against round r of each other, paired on the same questions.

No model and no run folder is read, so the numbers can be checked anywhere, and the comparison does
not wait until both arms' run folders are on one machine: each arm's committed rounds are its latest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from ssb.report.rounds import rounds_sections
from ssb.rounds import ROUNDS_FILE
from ssb.runfolder.export import gunzip

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ARMS = ("rounds-ssb-min32", "rounds-sft-min32")
DEFAULT_OUT = RESULTS / "rounds-compared-min32"


def unpack(export: Path, folder: Path) -> None:
    """An exported iterated run into ``folder``, laid out as the run folder the rounds report reads."""
    rounds_file = export / ROUNDS_FILE
    if not rounds_file.exists():
        raise SystemExit(f"{export}: no {ROUNDS_FILE}; not an export of an iterated run (evidence_export.py rounds)")
    rounds = json.loads(rounds_file.read_text())
    for entry in rounds["per_round"]:
        source, target = export / f"round-{entry['round']}", folder / entry["folder"]
        target.mkdir(parents=True, exist_ok=True)
        if (source / "stats.json").exists():
            shutil.copyfile(source / "stats.json", target / "stats.json")
        for summary in source.glob("eval/*/*.summary.json"):
            (target / summary.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(summary, target / summary.relative_to(source))
        for samples in source.glob("eval/*/*.samples.jsonl.gz"):
            gunzip(samples, target / samples.relative_to(source).with_suffix(""))
    shutil.copyfile(rounds_file, folder / ROUNDS_FILE)


def recompute(names: list[str], out: Path, results: Path = RESULTS) -> Path:
    """Write ``out/report.md`` (and its plots) for the exported rounds ``names``; returns its path."""
    if len(set(names)) < len(names):
        raise SystemExit("the same export is given twice")
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for name in names:
            unpack(results / name, Path(tmp) / name)
            folders.append(Path(tmp) / name)
        out.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python studies/rounds/rounds_recompute.py", *(["--out", str(out)] if out != DEFAULT_OUT else []),
                            *(["--results", str(results)] if results != RESULTS else []), *names])
        where = "studies/rounds/results/" if results == RESULTS else f"{results}/"
        lines = [f"# Iterated rounds: {', '.join(names)}", "",
                 f"Recomputed from the committed exports in {where} alone (`{command}`). Each arm's rounds are its latest "
                 "committed ones; a round under way shows its funnel so far and is not evaluated.", "",
                 *rounds_sections(folders, out)]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(DEFAULT_ARMS), metavar="NAME",
                        help="folders of studies/rounds/results/ written by evidence_export.py rounds (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where report.md and its plots go (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder that holds the NAMEs (default: the committed one)")
    args = parser.parse_args()
    print(recompute(args.names, args.out, args.results))


if __name__ == "__main__":
    main()
