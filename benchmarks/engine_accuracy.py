"""Does the fast engine cost accuracy? Paired comparison of two ``ssb eval`` runs on the same questions.

Both runs are greedy evaluations of the same model on the same benchmark questions; one through the
reference backend (hf, float32), one through the engine under test. Reports each run's pass@1 with
its CI, the paired difference with its 95% CI and McNemar's p, every question on which the two
disagree (gold and both answers), how many completions are token-for-token identical, and copies both
samples files, compressed, next to the result so the numbers can be recomputed.

The two evaluations (run first, resumable):
    ssb eval --model packaged:qwen2.5-coder-0.5b-instruct --benchmarks gsm8k --limit 200 --temperature 0 \\
        --max-new-tokens 384 --out runs/acc-hf --backend.name hf --model.dtype float32 --backend.batch_size 50 --eval.chunk_questions 50
    ssb eval ... --out runs/acc-openvino --backend.name openvino
then:
    python benchmarks/engine_accuracy.py runs/acc-hf runs/acc-openvino --names hf-fp32,openvino-int8
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

from machine import machine_info
from ssb.runfolder.artifacts import read_jsonl
from ssb.stats.metrics import mean_with_ci, paired_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", help="run folder of the reference evaluation")
    parser.add_argument("candidate", help="run folder of the engine under test")
    parser.add_argument("--names", default="hf-fp32,openvino-int8")
    parser.add_argument("--benchmark", default="gsm8k")
    parser.add_argument("--out", default="benchmarks/results/engine_accuracy")
    args = parser.parse_args()
    names = args.names.split(",")
    runs = [Path(args.reference), Path(args.candidate)]
    samples = [runs[i] / "eval" / "base" / f"{args.benchmark}.samples.jsonl" for i in range(2)]
    records = [{r["id"]: r for r in read_jsonl(path)} for path in samples]
    ids = sorted(records[0], key=lambda i: records[0][i]["index"])
    if set(ids) != set(records[1]):
        raise SystemExit(f"the two runs evaluated different questions ({len(ids)} vs {len(records[1])})")
    first = [[r[i]["completions"][0] for i in ids] for r in records]
    scores = [[float(c["correct"]) for c in run] for run in first]
    summaries = [json.loads((runs[i] / "eval" / "base" / f"{args.benchmark}.summary.json").read_text()) for i in range(2)]
    disagreements = [{"id": i, "gold": records[0][i]["gold"], names[0]: a["answer"], names[1]: b["answer"],
                      f"{names[0]}_correct": a["correct"], f"{names[1]}_correct": b["correct"]}
                     for i, a, b in zip(ids, *first) if a["correct"] != b["correct"]]
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(), "benchmark": args.benchmark,
        "n_questions": len(ids),
        "pass@1": {names[k]: mean_with_ci(scores[k], binary=True) for k in range(2)},
        "difference": {"of": f"{names[1]} - {names[0]}", **paired_difference(scores[1], scores[0])},
        "identical_completions": sum(a["text"] == b["text"] for a, b in zip(*first)),
        "same_answer": sum(a["answer"] == b["answer"] for a, b in zip(*first)),
        "wall_s": {names[k]: summaries[k]["this_invocation"]["wall_s"] for k in range(2)},
        "tokens_per_s": {names[k]: summaries[k]["this_invocation"]["tokens_per_s"] for k in range(2)},
        "disagreements": disagreements,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in zip(names, samples):
        with open(path, "rb") as src, gzip.open(out / f"{name}.samples.jsonl.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    (out / f"{args.benchmark}_{names[1]}_vs_{names[0]}.json").write_text(json.dumps(report, indent=2) + "\n")
    d = report["difference"]
    print(f"{names[0]} {report['pass@1'][names[0]]['mean']:.3f} vs {names[1]} {report['pass@1'][names[1]]['mean']:.3f} (n={len(ids)}); "
          f"difference {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], {d['better']} gained / {d['worse']} lost, "
          f"McNemar p={d['p_value']:.3f}; identical completions {report['identical_completions']}/{len(ids)}")


if __name__ == "__main__":
    main()
