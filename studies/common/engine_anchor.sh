# Sourced by the study drivers (studies/evidence/evidence.sh, studies/onpolicy/onpolicy.sh), which define config, runs,
# eval_engine, step and commit.
#
# engine_anchor_here RESULTS PLANS BENCHMARK_ARRAY...: the base model graded by this machine's engine, the anchor of the
# arms graded here (`engine_anchors` in ssb.stats.analysis_plan; its name from studies/common/engine_anchor.py). A committed
# anchor of that name in the results folders the reports read (anchor_results: evidence_recompute.py reads the evidence
# study's and, with --also, the on-policy study's) is reused only if it records this CPU's kernel flags and graded every
# benchmark asked for; otherwise the driver stops, since the name is taken. With none committed, the base model is
# graded on each benchmark whose argument array is named (the driver's gsm8k, math), exported to RESULTS and committed;
# each plan in PLANS (space-separated) that does not list the name yet gets a reminder, since a report anchors only on
# declared models.
anchor_results=(studies/evidence/results studies/onpolicy/results)

engine_anchor_here() {
  local results=$1 plans=$2 name committed benchmark plan i needs=()
  shift 2
  for benchmark in "$@"; do  # the benchmark each argument array grades: the value after --eval.benchmarks, unbracketed
    local -n benchmark_args=$benchmark
    for i in "${!benchmark_args[@]}"; do
      [ "${benchmark_args[$i]}" != --eval.benchmarks ] || needs+=("${benchmark_args[$((i + 1))]//[][]/}")
    done
    unset -n benchmark_args
  done
  name=$(python3 studies/common/engine_anchor.py name)
  committed=$(python3 studies/common/engine_anchor.py committed --needs "$(IFS=,; echo "${needs[*]}")" "${anchor_results[@]}") || return 1
  [ -z "$committed" ] || return 0
  for benchmark in "$@"; do
    local -n benchmark_args=$benchmark
    step eval --config "$config" --run_dir "$runs-$name" "${eval_engine[@]}" "${benchmark_args[@]}"
    unset -n benchmark_args
  done
  python3 studies/common/evidence_export.py arm "$name" --eval-dir "$runs-$name" --model base --results "$results"
  commit "$name: the base model graded by this engine (the anchor of its arms)"
  for plan in $plans; do
    grep -q "engine_anchors:.*\b$name\b" "$plan" ||
      echo "note: $name is not yet in $plan's engine_anchors; append it before reading the report" >&2
  done
}
