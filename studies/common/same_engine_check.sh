# Sourced by the study drivers (studies/evidence/evidence.sh, studies/onpolicy/onpolicy.sh), which define config, runs,
# eval_engine and step. same_engine_check [BENCHMARK COMMITTED_SAMPLES]: the base model again on the first 40 questions
# of BENCHMARK (default: GSM8K, against the evidence study's committed base samples), compared with its committed samples
# grade for grade (studies/common/same_evaluation.py exits 1 on any difference, stopping the driver before it spends
# hours on an evaluation that is not the committed arms'). The same settings grade differently on another CPU class
# (studies/onpolicy/README.md: a CPU with AMX against the avx512_bf16-only one that graded the committed arms).
same_engine_check() {
  local benchmark=${1:-gsm8k} committed=${2:-studies/evidence/results/base/gsm8k.samples.jsonl.gz}
  step eval --config "$config" --run_dir "$runs-eval-check-$benchmark" "${eval_engine[@]}" --eval.benchmarks "[$benchmark]" --eval.limit 40
  python3 studies/common/same_evaluation.py "$runs-eval-check-$benchmark/eval/base/$benchmark.samples.jsonl" "$committed"
}
