"""Does the int8 engine keep an adapter's effect? SSB - base with int8 weights and with exact weights, same questions.

    python studies/evidence/precision_effect.py [--adapter ssb] [--benchmark gsm8k]

Reads the committed evidence arms (studies/evidence/results/<arm>/<benchmark>.samples.jsonl.gz):
``base`` and ``ADAPTER`` evaluated as every arm of the study is, through the OpenVINO engine with
int8 weights and the activation precision OpenVINO picks for the CPU (bf16 where it has bf16 units),
and ``base-fp32`` and ``ADAPTER-fp32`` with exact weights and float32 activations
(``studies/evidence/evidence.sh precision``). On the questions all four answered it reports each pass@1
with its CI, each model's exact - int8 change with how many answers and completions stay the same,
the adapter's effect (ADAPTER - base, paired) in each precision, and the difference between the two
effects: per question (adapter - base in int8) - (adapter - base exact), its mean, 95% CI and
sign-test p. An effect that int8 rounding erased or created shows up there. Writes precision_effect.json next to the
arms.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

from ssb.stats.metrics import mean_with_ci, paired_difference

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def machine_info() -> dict:
    """This machine as every benchmark result records it: ``python benchmarks/machine.py``'s record."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "machine.py")], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def first_completions(arm: str, benchmark: str) -> dict[str, dict]:
    path = RESULTS / arm / f"{benchmark}.samples.jsonl.gz"
    if not path.exists():
        raise SystemExit(f"{path}: not committed (run studies/evidence/evidence.sh main precision first)")
    with gzip.open(path, "rt") as f:
        return {record["id"]: record["completions"][0] for record in map(json.loads, f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", default="ssb")
    parser.add_argument("--benchmark", default="gsm8k")
    args = parser.parse_args()
    arms = {"base": "base", "adapter": args.adapter, "base_exact": "base-fp32", "adapter_exact": f"{args.adapter}-fp32"}
    runs = {key: first_completions(arm, args.benchmark) for key, arm in arms.items()}
    ids = sorted(set.intersection(*(set(run) for run in runs.values())))
    if not ids:
        raise SystemExit("the four evaluations share no question")
    correct = {key: [float(run[i]["correct"]) for i in ids] for key, run in runs.items()}
    effect_int8 = [a - b for a, b in zip(correct["adapter"], correct["base"])]
    effect_exact = [a - b for a, b in zip(correct["adapter_exact"], correct["base_exact"])]
    per_model = {}
    for model in ("base", "adapter"):
        low, exact = runs[model], runs[f"{model}_exact"]
        per_model[arms[model]] = {
            "exact - int8": paired_difference(correct[f"{model}_exact"], correct[model]),
            "same_answer": sum(low[i]["answer"] == exact[i]["answer"] for i in ids),
            "identical_completions": sum(low[i]["text"] == exact[i]["text"] for i in ids),
        }
    result = {
        "command": " ".join(["python", *sys.argv]), "machine": machine_info(), "benchmark": args.benchmark, "n_questions": len(ids),
        "arms": arms, "engines": {"int8": "OpenVINO, int8 weights, inference_precision auto (the study's engine)",
                                  "exact": "OpenVINO, fp32 weights, inference_precision f32"},
        "pass@1": {arm: mean_with_ci(correct[key], binary=True) for key, arm in arms.items()},
        "per_model": per_model,
        "effect": {"int8": paired_difference(correct["adapter"], correct["base"]),
                   "exact": paired_difference(correct["adapter_exact"], correct["base_exact"])},
        "effect_int8_minus_exact": paired_difference(effect_int8, effect_exact),
    }
    out = RESULTS / "precision_effect.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("int8", "exact"):
        d = result["effect"][name]
        print(f"{args.adapter} - base, {name} weights: {pct(d)} points, {d['better']} / {d['worse']} questions, p = {d['p_value']:.3f}")
    gap = result["effect_int8_minus_exact"]
    print(f"effect int8 - effect exact: {pct(gap)} points (n = {len(ids)}, p = {gap['p_value']:.3f}); written to {out}")


def pct(d: dict) -> str:
    return f"{100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"


if __name__ == "__main__":
    main()
