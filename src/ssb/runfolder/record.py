"""Read-only, typed access to what a run folder records, for the report (``ssb.report``, ``ssb.report.rounds``).

The report reads run folders only through this module: the stages' stats (``stats.json``), their
manifest entries (``manifest.json``), the evaluations' summaries and per-question samples, the
distillation metrics, the training data (with what refine recorded about each kept solution) and an
iterated run's ``rounds.json``. It imports no orchestration: the stages write these files, the report
reads them. Folders made by earlier ssb versions are read as they are (no format check: a report of
an old folder is still a report). Every file a finished stage recorded the digest of is checked against it as it is
read, as a stage checks what it reads, so an edited journal or summary is named instead of reported.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from ssb.runfolder.artifacts import RunFolderError, bytes_problem, changed_since, parse_json, parse_jsonl, read_json_file
from ssb.training_data import KeptSolution

ROUNDS_FILE = "rounds.json"  # an iterated run's list of rounds (ssb.rounds writes it)


def _json(path: Path) -> dict | None:
    return read_json_file(path) if path.exists() else None


def checked_summary(summary: dict, path: Path) -> dict:
    """An evaluation's summary, with the fields every report reads; a RunFolderError naming the file otherwise."""
    p = summary.get("pass@1")
    if not (isinstance(p, dict) and isinstance(summary.get("samples_per_question"), int) and isinstance(p.get("mean"), (int, float))
            and isinstance(p.get("n_questions"), int) and isinstance(p.get("ci95"), list) and len(p["ci95"]) == 2):
        raise RunFolderError(f"{path}: not an evaluation summary ssb wrote (samples_per_question, pass@1 with mean, ci95 and "
                             "n_questions); put it back, or redo the evaluation (ssb eval --force)")
    return summary


class RunRecord:
    """One run folder (or ``ssb eval --out`` folder), as the report reads it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @cached_property
    def recorded_digests(self) -> dict[str, tuple[str, dict]]:
        """{file inside the folder: (the finished stage that wrote it, its size and sha256)} from ``manifest.json``."""
        return {rel: (stage, digest) for stage, entry in (self.stage_entries or {}).items()
                for rel, digest in (entry.get("outputs") or {}).items()}

    def checked(self, path: Path) -> bytes:
        """The bytes of ``path`` (inside the folder), read once and checked against the digest its stage recorded, if one did."""
        data = path.read_bytes()
        recorded = self.recorded_digests.get(path.relative_to(self.path).as_posix())
        if recorded is not None and (problem := bytes_problem(data, recorded[1])) is not None:
            raise RunFolderError(changed_since(path, problem, recorded[0], "wrote", self.path))
        return data

    def _journal(self, *parts: str) -> list[dict]:
        path = self.path.joinpath(*parts)
        return parse_jsonl(self.checked(path), path) if path.exists() else []

    @cached_property
    def stats(self) -> dict[str, dict]:
        """{stage: its stats} (``stats.json``); empty when no stage has finished."""
        path = self.path / "stats.json"
        stats = _json(path) or {}
        if not all(isinstance(value, dict) for value in stats.values()):
            raise RunFolderError(f"{path}: not the stats ssb writes (an object of stages, each an object); put it back, or redo the stages")
        return stats

    def stage_stats(self, stage: str) -> dict:
        """One stage's stats; empty when it has not finished."""
        return self.stats.get(stage, {})

    @cached_property
    def stage_entries(self) -> dict[str, dict] | None:
        """{stage: its manifest entry} (``manifest.json``); None without a manifest."""
        manifest = _json(self.path / "manifest.json")
        if manifest is not None and not isinstance(manifest.get("stages"), dict):
            raise RunFolderError(f"{self.path / 'manifest.json'}: lists no stages; put back the manifest ssb wrote")
        return None if manifest is None else manifest["stages"]

    def evaluated_adapters(self) -> dict[str, str | None] | None:
        """{evaluated model: its adapter directory (None for the base)}; None without a manifest."""
        if self.stage_entries is None:
            return None
        return {name.split("/")[1]: entry.get("model_spec", {}).get("adapter") for name, entry in self.stage_entries.items()
                if name.startswith("eval/")}

    def summaries(self) -> dict[str, dict[str, dict]]:
        """{model: {benchmark: summary}} from ``eval/<model>/<benchmark>.summary.json``."""
        out: dict[str, dict[str, dict]] = {}
        for path in sorted((self.path / "eval").glob("*/*.summary.json")):
            summary = checked_summary(parse_json(self.checked(path), path), path)
            if not (isinstance(summary.get("model"), str) and isinstance(summary.get("benchmark"), str)):
                raise RunFolderError(f"{path}: names no model and benchmark; put it back, or redo the evaluation (ssb eval --force)")
            out.setdefault(summary["model"], {})[summary["benchmark"]] = summary
        return out

    def summary(self, model: str, benchmark: str) -> dict | None:
        path = self.path / "eval" / model / f"{benchmark}.summary.json"
        return checked_summary(parse_json(self.checked(path), path), path) if path.exists() else None

    def benchmarks_of(self, model: str) -> list[str]:
        return sorted(p.name.removesuffix(".summary.json") for p in (self.path / "eval" / model).glob("*.summary.json"))

    def per_question_scores(self, model: str, benchmark: str) -> dict[str, float]:
        """{question id: fraction of its samples graded correct} from the evaluation journal."""
        records = self._journal("eval", model, f"{benchmark}.samples.jsonl")
        return {r["id"]: sum(c["correct"] for c in r["completions"]) / len(r["completions"]) for r in records}

    def distill_metrics(self) -> list[dict]:
        """One line per optimiser step of ``distill/metrics.jsonl``; empty when the folder trained nothing."""
        return self._journal("distill", "metrics.jsonl")

    def training_solutions(self) -> list[str]:
        """The solutions of the training data (the student view's last message)."""
        return [r["messages"][-1]["content"] for r in self._journal("student.jsonl")]

    def training_solution_length(self) -> str | None:
        """Mean solution length of the training data: tokens from the distill stats, else characters of student.jsonl."""
        tokens = self.stage_stats("distill").get("mean_solution_tokens")
        if tokens is not None:
            return f"{tokens:.0f} tokens"
        solutions = self.training_solutions()
        return f"{sum(map(len, solutions)) / len(solutions):.0f} chars" if solutions else None

    def has_training_data(self) -> bool:
        """Whether refine wrote its views here (``student.jsonl``)."""
        return (self.path / "student.jsonl").exists()

    def kept_solutions(self) -> list[KeptSolution]:
        """The kept solutions (``student.jsonl``), each with the tokens the refiner generated for it and the correct
        rollout its hinted prompt showed (its own question's, or with ``refine.hint random`` the donor's), from
        ``refinements.jsonl`` and ``rollouts.jsonl`` where the folder has them."""
        refined = {e["id"]: e for e in self._journal("refinements.jsonl") if "refinement" in e}
        rollouts = {r["id"]: r["rollouts"] for r in self._journal("rollouts.jsonl")}
        solutions = []
        for record in self._journal("student.jsonl"):
            entry = refined.get(record["id"])
            donor = None if entry is None else entry.get("hint_from", entry["id"])  # hint_from: absent before refine.hint existed
            shown = rollouts[donor][entry["selection"]["correct_index"]]["text"] if donor in rollouts else None
            solutions.append(KeptSolution(record["id"], record["messages"][-1]["content"],
                                          None if entry is None else entry["refinement"].get("num_tokens"), shown))
        return solutions

    def recorded_input(self, stage: str, section: str, name: str):
        """The value of config field ``section.name`` that ``stage`` recorded among its inputs in ``manifest.json``; None when
        not recorded (no manifest, the stage has not finished, or an ``added_later`` field left at its default)."""
        entry = (self.stage_entries or {}).get(stage, {})
        return entry.get("inputs", {}).get(section, {}).get(name)

    def round_folders(self) -> list[tuple[int, Path]] | None:
        """(round, its run folder) of an iterated run, in round order; None for a run of one round."""
        record = self.rounds()
        return None if record is None else [(r["round"], self.path / r["folder"]) for r in record["per_round"]]

    def rounds(self) -> dict | None:
        """An iterated run's ``rounds.json``; None for a run of one round."""
        return _json(self.path / ROUNDS_FILE)

    def stopped(self) -> str | None:
        """Why the method stopped after refine: what ``ssb run`` recorded, else what the counts say (``no_yield``)."""
        return self.stage_stats("refine").get("stopped") or no_yield(self.stats)


def no_yield(stats: dict, config=None) -> str | None:
    """Why a run folder's method stops after refine (from its stats), or None when it goes on: refine kept no
    solution, or (given the run's ``config``) fewer than distillation needs to hold some out and still fill one
    micro-batch."""
    refine = stats.get("refine")
    needed = 1 if config is None else config.distill.heldout_examples + config.distill.micro_batch_size
    if refine is None or refine["kept"] >= needed:
        return None
    empty = " (the data slice is empty)" if refine["questions"] == 0 else ""
    what = ("no solution" if refine["kept"] == 0 else
            f"{refine['kept']} solution(s), fewer than distill needs ({config.distill.heldout_examples} held out + "
            f"a micro-batch of {config.distill.micro_batch_size})")
    return (f"refine kept {what} ({refine['mixed']} mixed of {refine['questions']} questions{empty}): "
            "nothing to train on, so teacher, distill and eval did not run")
