# Sourced by the study drivers (studies/evidence/evidence.sh, studies/onpolicy/onpolicy.sh), which define config, runs,
# eval_engine and step. same_engine_check: the base model again on the first 40 GSM8K questions, compared with its
# committed samples grade for grade (studies/common/same_evaluation.py exits 1 on any difference, stopping the driver
# before it spends hours on an evaluation that is not the committed arms').
same_engine_check() {
  step eval --config "$config" --run_dir "$runs-eval-check" "${eval_engine[@]}" --eval.benchmarks "[gsm8k]" --eval.limit 40
  python3 studies/common/same_evaluation.py "$runs-eval-check/eval/base/gsm8k.samples.jsonl" studies/evidence/results/base/gsm8k.samples.jsonl.gz
}
