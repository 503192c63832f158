"""What explains an arm's score: the shape of its answers, and how its training went.

    python studies/onpolicy/diagnostics.py --benchmark svamp pilot-base pilot-jsd pilot-fkl ...
    python studies/onpolicy/diagnostics.py --benchmark gsm8k base ssb sft-min32 grpo-wall onpolicy-gold ...

Model-free, from the committed results alone (an arm is looked up in studies/onpolicy/results, then in
studies/evidence/results). Per arm, over its responses to the benchmark (``<arm>/<benchmark>.samples.jsonl.gz``):
pass@1, the mean response length in tokens (the engine's count), and the share of responses that
- hit the generation cap (finish reason ``length``),
- carry no boxed answer,
- are answer-only (fewer than 32 tokens: ``ssb.training_data.answer_only``),
- answer first (a ``\\boxed`` within the first 80 characters: ``ssb.training_data.answers_first``),
- speak of what only a teacher was shown (``ssb.training_data.PROMPT_TERMS`` and the on-policy teacher prompt's own
  phrases, ``CONTEXT_TERMS``): a student that learned to mention privileged context it never sees.
Where the arm's training log is committed (``<arm>/onpolicy/metrics.jsonl.gz``, TRL's log, one entry per optimiser
step), also the share of the training wall-clock spent sampling (the engine sampler's logged generation and weight-push
seconds over the stats' wall-clock: ``training_wall_s``, over every invocation, where the stats have it; else the last
invocation's, which covers a resumed run's last steps only, so no share is given where the logged sampling exceeds it), the
teacher-student divergence (TRL's distillation loss: the divergence over the student's own samples, so
lower is closer agreement) and the student's sampled length, over the first and the last five steps, the share of
completions that hit the cap, and the budget (steps, generated tokens, wall-clock) from ``training-stats.json``. Where
the log has them (runs since they were added): the share of the student's completions with the gold answer
(``student/correct``, GRPO's reward watched, never trained on) and the sampled tokens' mean negative log-probability
(``sampler/token_nll``: at temperature 1, an estimate of the student's per-token entropy; TRL's SDFT trainer logs none).
Writes ``diagnostics-<benchmark>.json`` next to the arms.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from ssb.training_data import PROMPT_TERMS, answer_only, answers_first, uses_terms

RESULTS = (Path(__file__).resolve().parent / "results", Path(__file__).resolve().parents[1] / "evidence" / "results")
CONTEXT_TERMS = PROMPT_TERMS + ("information above", "meant to help you", "reference solution")
EDGE = 5  # steps averaged at each end of training


def read_gz(path: Path) -> list[dict]:
    """The records of a committed ``*.jsonl.gz``."""
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def arm_dir(arm: str, folders: list[Path]) -> Path:
    """The first of the results folders that holds ``arm``."""
    for results in folders:
        if (results / arm).is_dir():
            return results / arm
    raise SystemExit(f"{arm}: no such arm in {' or '.join(str(r) for r in folders)}")


def share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def responses(samples: list[dict]) -> dict:
    """The shape of an arm's responses (every completion of every question)."""
    completions = [c for record in samples for c in record["completions"]]
    if not completions:
        raise SystemExit("no completions")
    return {"questions": len(samples), "responses": len(completions),
            "pass@1": share([bool(c["correct"]) for c in completions]),
            "mean_tokens": round(sum(c["num_tokens"] for c in completions) / len(completions), 1),
            "capped": share([c["finish_reason"] == "length" for c in completions]),
            "no_answer": share([c["answer"] is None for c in completions]),
            "answer_only": share([answer_only(c["num_tokens"]) for c in completions]),
            "answer_first": share([answers_first(c["text"]) for c in completions]),
            "context_terms": share([uses_terms(c["text"], CONTEXT_TERMS) for c in completions])}


def mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 5) if values else None


def training(directory: Path) -> dict | None:
    """How the on-policy training went, from its committed log and stats; None for an arm without one."""
    log = directory / "onpolicy" / "metrics.jsonl.gz"
    if not log.exists():
        return None
    steps = [e for e in read_gz(log) if "self_distillation/distillation_loss" in e]
    loss = [e["self_distillation/distillation_loss"] for e in steps]
    length = [e["completions/mean_length"] for e in steps if "completions/mean_length" in e]
    capped = [e["completions/clipped_ratio"] for e in steps if "completions/clipped_ratio" in e]
    stats = json.loads((directory / "training-stats.json").read_text())["onpolicy"]
    watched = {}
    for name, key in (("student_correct", "student/correct"), ("token_nll", "sampler/token_nll")):
        values = [e[key] for e in steps if key in e]
        watched[f"{name}_first"], watched[f"{name}_last"] = mean(values[:EDGE]), mean(values[-EDGE:])
    sampling = sum(e.get("sampler/generate_s", 0.0) + e.get("sampler/push_s", 0.0) for e in steps)
    wall = stats.get("training_wall_s") or stats["this_invocation"]["wall_s"]
    whole = stats.get("training_wall_s") is not None or (stats.get("resumed_from_step") is None and sampling <= wall)
    return {**watched, "sampling_share": round(sampling / wall, 4) if sampling and wall and whole else None,
            "steps": stats["steps"], "generated_tokens": stats["generated_tokens"], "wall_s": wall, "wall_covers_every_step": whole,
            "distillation_loss_first": mean(loss[:EDGE]), "distillation_loss_last": mean(loss[-EDGE:]),
            "student_tokens_first": mean(length[:EDGE]), "student_tokens_last": mean(length[-EDGE:]),
            "student_capped": mean(capped)}


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def pair(row: dict, name: str, show) -> str:
    """``first / last`` of a watched value, or a dash where the log does not have it."""
    first, last = row[f"{name}_first"], row[f"{name}_last"]
    return "-" if first is None else f"{show(first)} / {show(last)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("arms", nargs="+")
    parser.add_argument("--benchmark", default="gsm8k")
    parser.add_argument("--results", type=Path, action="append",
                        help="a results folder to look the arms up in, in the order given; the JSON goes into the first "
                             "(default: the committed studies/onpolicy/results, then studies/evidence/results)")
    args = parser.parse_args()
    folders = args.results or list(RESULTS)
    rows = {}
    for arm in args.arms:
        directory = arm_dir(arm, folders)
        rows[arm] = {"responses": responses(read_gz(directory / f"{args.benchmark}.samples.jsonl.gz")),
                     "training": training(directory)}
    out = folders[0] / f"diagnostics-{args.benchmark}.json"
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "benchmark": args.benchmark, "arms": rows}, indent=2) + "\n")
    print("| arm | n | pass@1 | mean tokens | capped | no answer | answer-only | answer-first | context terms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, row in rows.items():
        r = row["responses"]
        print(f"| {arm} | {r['responses']} | {percent(r['pass@1'])} | {r['mean_tokens']:.0f} | {percent(r['capped'])} | "
              f"{percent(r['no_answer'])} | {percent(r['answer_only'])} | {percent(r['answer_first'])} | {percent(r['context_terms'])} |")
    trained = {arm: row["training"] for arm, row in rows.items() if row["training"]}
    if trained:
        print(f"\n| arm | steps | generated tokens | wall-clock | divergence, first / last {EDGE} steps | "
              f"student tokens, first / last {EDGE} | student capped | student correct, first / last {EDGE} | "
              f"token NLL, first / last {EDGE} | sampling share |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for arm, t in trained.items():
            wall = f"{t['wall_s']:,.0f} s" + ("" if t["wall_covers_every_step"] else " (last invocation)")
            print(f"| {arm} | {t['steps']} | {t['generated_tokens']:,} | {wall} | {t['distillation_loss_first']:.4f} / "
                  f"{t['distillation_loss_last']:.4f} | {t['student_tokens_first']:.0f} / {t['student_tokens_last']:.0f} | "
                  f"{percent(t['student_capped'])} | {pair(t, 'student_correct', percent)} | {pair(t, 'token_nll', '{:.3f}'.format)} | "
                  f"{'-' if t['sampling_share'] is None else percent(t['sampling_share'])} |")
    print(f"\n(written to {out})")


if __name__ == "__main__":
    main()
