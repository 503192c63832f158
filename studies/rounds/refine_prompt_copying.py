"""Refinements that run on into the hinted prompt, per round, and the end-of-turn probability behind them.

    python studies/rounds/refine_prompt_copying.py [--model NAME=PATH ... --views-of rounds-ssb-min32/round-1 --limit 40]

Model-free part, from the committed round folders (``rounds-<arm>/round-<r>/``): per round, the
refine outcomes, and the truncated refinements that contain the hinted prompt's section delimiter
("\\n-----\\n"): a refiner that finishes its solution and, instead of ending its turn, goes on
reproducing the prompt ("This is an attempt by another student...") until the token limit. Of
those, how many had written a boxed answer before the delimiter and how many of those answers are
right (graded like refine grades): what a refine that stopped at the delimiter would have kept.

With ``--model NAME=PATH`` (repeatable): the probability of the end-of-turn token at the end of a
round's kept solutions (the first ``--limit`` of ``--views-of``'s teacher and student views), under the
base model and under each PATH (a merged round model, e.g. runs/evidence-rounds-ssb-min32/round-2/model,
round 1's model, or a LoRA adapter folder, applied to the base model), in the hinted view and in the
bare-question view, paired solution by solution. Writes refine_prompt_copying.json next to the round
folders; a run without ``--model`` updates the model-free part and keeps the end-of-turn part (and
``end_of_turn_command``, the command that made it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from committed_views import committed_examples, read_gz

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
DELIMITER = "\n-----\n"
INSTRUCTION = "enclosed in \\boxed{}"  # from the hinted prompt's closing instructions; its box is empty, so a copy has no answer


def machine_info() -> dict:
    """This machine as every benchmark result records it: ``python benchmarks/machine.py``'s record."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "machine.py")], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def round_copying(folder: Path) -> dict:
    """Refine outcomes of one round folder, its truncated refinements that copy the prompt, and its refinements without an
    answer that copy the prompt's closing instructions (up to their empty box) and stop."""
    from ssb.grading import grade
    from ssb.prompts import load_prompts

    assert INSTRUCTION in load_prompts().hinted_template, "the hinted prompt no longer ends with the instruction counted here"
    gold = {r["id"]: r["gold"] for r in read_gz(folder / "rollouts.jsonl.gz")}
    records = read_gz(folder / "refinements.jsonl.gz")
    refined = [r for r in records if "refinement" in r]
    truncated = [r for r in refined if r["outcome"] == "refinement-truncated"]
    copying = [r for r in truncated if DELIMITER in r["refinement"]["text"]]
    before = [(r, r["refinement"]["text"].split(DELIMITER, 1)[0]) for r in copying]
    boxed = [(r, text) for r, text in before if "\\boxed{" in text]
    right = sum(grade(text, gold[r["id"]]).correct for r, text in boxed)
    no_answer = [r for r in refined if r["outcome"] == "refinement-no-answer"]
    tokens = sorted(r["refinement"]["num_tokens"] for r in refined)
    return {"refined": len(refined), "kept": sum(r["outcome"] == "kept" for r in records),
            "median_refinement_tokens": tokens[len(tokens) // 2] if tokens else None,
            "truncated": len(truncated), "truncated_copying_the_prompt": len(copying),
            "boxed_answer_before_the_copy": len(boxed), "of_them_right": right,
            "no_answer": len(no_answer), "no_answer_copying_the_instructions": sum(INSTRUCTION in r["refinement"]["text"] for r in no_answer)}


def end_of_turn_probabilities(models: dict[str, str], views_of: Path, limit: int) -> dict:
    """P(end-of-turn) at each kept solution's last position, base against each of ``models``, in both views."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ssb.chat import ChatFormat
    from ssb.config import load_config
    from ssb.models import load_model, load_tokenizer

    config = load_config("evidence", {})
    chat = ChatFormat(load_tokenizer(config.model))
    examples = committed_examples(views_of, chat)[:limit]

    def load(path: str):
        if Path(path, "adapter_config.json").exists():
            return PeftModel.from_pretrained(load_model(config.model), path)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)

    p = {}
    for name, path in {"base": None, **models}.items():
        model = (load_model(config.model) if path is None else load(path)).eval()
        for view in ("teacher", "student"):
            values = []
            for e in examples:
                prompt = e.teacher_prompt_ids if view == "teacher" else e.student_prompt_ids
                with torch.no_grad():  # logits at the last position predict the last solution token: end-of-turn
                    logits = model(input_ids=torch.tensor([prompt + e.solution_ids[:-1]]), logits_to_keep=1).logits[0, -1]
                values.append(logits.float().softmax(-1)[e.solution_ids[-1]].item())
            p[(name, view)] = values
        del model
    out = {"views_of": str(views_of.relative_to(RESULTS)), "solutions": len(examples), "models": models}
    for view in ("teacher", "student"):
        base = p[("base", view)]
        out[f"{view}_view"] = {"base": {"mean": round(sum(base) / len(base), 4), "share_under_0.9": round(sum(x < 0.9 for x in base) / len(base), 3)}}
        for name in models:
            other = p[(name, view)]
            out[f"{view}_view"][name] = {"mean": round(sum(other) / len(other), 4),
                                         "share_under_0.9": round(sum(x < 0.9 for x in other) / len(other), 3),
                                         "lower_than_base": sum(y < x for x, y in zip(base, other)),
                                         "higher_than_base": sum(y > x for x, y in zip(base, other))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="a merged round model or an adapter folder: also score P(end-of-turn) under it and under the base model")
    parser.add_argument("--views-of", default="rounds-ssb-min32/round-1", help="round folder (under the results) whose kept solutions to score")
    parser.add_argument("--limit", type=int, default=40, help="how many of its kept solutions")
    args = parser.parse_args()
    models = dict(spec.split("=", 1) for spec in args.model)
    rounds = {f"{folder.parent.name}/{folder.name}": round_copying(folder)
              for folder in sorted(RESULTS.glob("rounds-*/round-*")) if (folder / "refinements.jsonl.gz").exists()}
    out = RESULTS / "refine_prompt_copying.json"
    if models:
        end_of_turn = {"end_of_turn": end_of_turn_probabilities(models, RESULTS / args.views_of, args.limit), "machine": machine_info()}
    else:  # the model-free part only: the end-of-turn part of an earlier run stays, with the command and machine that made it
        earlier = json.loads(out.read_text()) if out.exists() else {}
        end_of_turn = {key: earlier[key] for key in ("end_of_turn", "end_of_turn_command", "machine") if key in earlier}
        if "end_of_turn" in earlier and "end_of_turn_command" not in earlier:
            end_of_turn["end_of_turn_command"] = earlier["command"]
    result = {"command": "python " + " ".join(sys.argv), "rounds": rounds, **end_of_turn}
    if models:
        result["end_of_turn_command"] = result["command"]
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| round | refined | kept | truncated | of them copying the prompt | boxed answer before the copy | of them right | no answer | "
          "of them copying the instructions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rounds.items():
        print(f"| {name} | {r['refined']} | {r['kept']} | {r['truncated']} | {r['truncated_copying_the_prompt']} | "
              f"{r['boxed_answer_before_the_copy']} | {r['of_them_right']} | {r['no_answer']} | {r['no_answer_copying_the_instructions']} |")
    for view in ("teacher", "student"):
        for name, e in result.get("end_of_turn", {}).get(f"{view}_view", {}).items():
            if not isinstance(e, dict):  # kept from the script's first form, which stored flat means (see the JSON)
                continue
            paired = f"; lower than base on {e['lower_than_base']}, higher on {e['higher_than_base']}" if name != "base" else ""
            print(f"P(end-of-turn), {view} view, {result['end_of_turn']['solutions']} solutions, {name}: {e['mean']:.3f}{paired}")


if __name__ == "__main__":
    main()
