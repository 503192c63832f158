"""Answers without reasoning: in the training solutions, and in each evaluated arm's responses.

    python studies/evidence/answer_only.py [--below 32] [--benchmark gsm8k]

A refinement whose answer is right is kept, however short: some only restate the verified final
answer ("The final answer is \\boxed{60}."). This counts, in the evidence study's committed training
data (studies/evidence/results/phase1), the kept solutions with fewer than BELOW tokens (the
distillation's solution tokens, end-of-turn included, through the study's tokenizer and chat
template), split into the held-out and the training examples as distillation splits them. Then,
for every committed arm's responses (``<arm>/<benchmark>.samples.jsonl.gz``, model-free: the token
counts are the engine's), how many have fewer than BELOW tokens and how accurate they and the
others are. With ``--first-token N``, also the probability of the first solution token of the
answer-only training solutions (and of N others) under the hinted teacher and the untrained
student: what the distillation and the cross-entropy ask of the student at that token. Writes
answer_only.json next to the arms.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def machine_info() -> dict:
    """This machine as every benchmark result records it: ``python benchmarks/machine.py``'s record."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "machine.py")], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def committed_examples(folder: Path, chat) -> list:
    """``ssb.alignment.align_examples`` on ``folder``'s teacher.jsonl.gz and student.jsonl.gz (``chat``: a ChatFormat)."""
    from ssb.alignment import align_examples
    from ssb.runfolder.export import gunzip

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("teacher.jsonl", "student.jsonl"):
            gunzip(folder / f"{name}.gz", Path(tmp) / name)
        return align_examples(Path(tmp) / "teacher.jsonl", Path(tmp) / "student.jsonl", chat)


def first_token_probabilities(config, examples) -> dict:
    """Mean probability of each solution's first token: the hinted teacher's (at T = 1 and at the
    distillation temperature) and the untrained student's, given the bare question."""
    import torch

    from ssb.models import load_model

    model = load_model(config.model)
    temperature = config.distill.temperature
    rows = []
    with torch.no_grad():
        for e in examples:
            logits = {view: model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
                      for view, prompt in (("teacher", e.teacher_prompt_ids), ("student", e.student_prompt_ids))}
            token = e.solution_ids[0]
            rows.append({"teacher": logits["teacher"].softmax(-1)[token].item(),
                         "teacher_at_T": (logits["teacher"] / temperature).softmax(-1)[token].item(),
                         "student": logits["student"].softmax(-1)[token].item(),
                         "student_at_T": (logits["student"] / temperature).softmax(-1)[token].item()})
    return {"examples": len(rows), "temperature": temperature, **{k: round(sum(r[k] for r in rows) / len(rows), 4) for k in rows[0]}}


def training_solutions(below: int, first_token: int = 0) -> dict:
    """Token counts of the kept solutions, and those under ``below``, held-out and training apart."""
    from ssb.chat import ChatFormat
    from ssb.config import load_config
    from ssb.distillation import split_heldout
    from ssb.models import load_tokenizer

    config = load_config("evidence", {})
    examples = committed_examples(RESULTS / "phase1", ChatFormat(load_tokenizer(config.model)))
    training, heldout = split_heldout(examples, config.distill.heldout_examples, config.seed)
    short = {part: [e for e in group if len(e.solution_ids) < below] for part, group in (("training", training), ("heldout", heldout))}
    first = {}
    if first_token:
        if not short["training"]:
            raise SystemExit(f"no training solution has fewer than {below} tokens: nothing for --first-token to score")
        others = [e for e in training if len(e.solution_ids) >= below][:first_token]
        first = {"first_solution_token": {"answer_only": first_token_probabilities(config, short["training"]),
                                          f"first_{len(others)}_others": first_token_probabilities(config, others)}}
    return {**first, "kept": len(examples), "training": len(training), "heldout": len(heldout),
            "below_in_training": len(short["training"]), "below_in_heldout": len(short["heldout"]),
            "short_solutions": {part: [{"tokens": len(e.solution_ids), "id": e.id} for e in sorted(group, key=lambda e: (len(e.solution_ids), e.id))]
                                for part, group in short.items()},
            "shortest_longer_solution_tokens": min((len(e.solution_ids) for e in examples if len(e.solution_ids) >= below), default=None)}


def responses(benchmark: str, below: int) -> dict:
    """Per committed arm: short responses, their accuracy, and the others'."""
    out = {}
    for path in sorted(RESULTS.glob(f"*/{benchmark}.samples.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            completions = [c for record in map(json.loads, f) for c in record["completions"]]
        short = [float(c["correct"]) for c in completions if c["num_tokens"] < below]
        rest = [float(c["correct"]) for c in completions if c["num_tokens"] >= below]
        out[path.parent.name] = {"responses": len(completions), "below": len(short), "below_share": round(len(short) / len(completions), 4),
                                 "below_correct": int(sum(short)), "pass@1_below": sum(short) / len(short) if short else None,
                                 "pass@1_rest": sum(rest) / len(rest) if rest else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--below", type=int, default=32, help="a solution or response with fewer tokens counts as answer-only")
    parser.add_argument("--benchmark", default="gsm8k")
    parser.add_argument("--first-token", type=int, default=0, metavar="N",
                        help="also score the first solution token of the answer-only training solutions and of N others under "
                             "the hinted teacher and the untrained student (loads the model)")
    args = parser.parse_args()
    result = {"command": "python " + " ".join(sys.argv), "below_tokens": args.below,
              "training_data": training_solutions(args.below, args.first_token),
              "responses": responses(args.benchmark, args.below), "machine": machine_info()}
    (RESULTS / "answer_only.json").write_text(json.dumps(result, indent=2) + "\n")
    data = result["training_data"]
    print(f"training data: {data['below_in_training']} of {data['training']} training solutions and {data['below_in_heldout']} of "
          f"{data['heldout']} held out have fewer than {args.below} tokens (the shortest other: {data['shortest_longer_solution_tokens']})")
    print(f"| arm | responses | under {args.below} tokens | of them correct | pass@1 of the others |")
    print("|---|---|---|---|---|")
    for arm, r in result["responses"].items():
        rest = "-" if r["pass@1_rest"] is None else f"{100 * r['pass@1_rest']:.1f}%"
        print(f"| {arm} | {r['responses']} | {r['below']} ({100 * r['below_share']:.1f}%) | {r['below_correct']} | {rest} |")
    for group, p in data.get("first_solution_token", {}).items():
        print(f"first solution token, {group} ({p['examples']}): teacher {p['teacher']:.3f} (T = {p['temperature']:g}: {p['teacher_at_T']:.3f}), "
              f"untrained student {p['student']:.3f} (T = {p['temperature']:g}: {p['student_at_T']:.3f})")


if __name__ == "__main__":
    main()
