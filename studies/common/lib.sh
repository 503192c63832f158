# The shell helpers of the study drivers (studies/*/*.sh), sourced by each from the repository root:
#   . studies/common/lib.sh
# A driver defines what these read when it calls them: config, runs, eval_engine (the evaluations' engine options),
# results (its results folder) and study (the title of its commits).

# copy_once FROM TO: a copy of run folder FROM at TO, unless TO exists. The copy is made under TO.partial and renamed, so
# that an interrupted copy is never taken for a finished one, and it leaves FROM's run lock file (.ssb/lock) behind: that
# file describes the process that held FROM, which never held the copy.
copy_once() { [ -e "$2" ] || { rm -rf "$2.partial" && cp -r "$1" "$2.partial" && rm -f "$2.partial/.ssb/lock" && mv "$2.partial" "$2"; }; }

# step ARGS...: one ssb command, its start logged with the time.
step() { echo "== $(date -u +%H:%M:%S) ssb $*" >&2; ssb "$@"; }

# commit MESSAGE: with EVIDENCE_COMMIT=1, the driver's results folder committed as "$study: MESSAGE", and only it,
# whatever else is staged in this checkout; nothing new to commit is not a failure.
commit() {
  if [ "${EVIDENCE_COMMIT:-0}" = 1 ]; then git add "$results" && git commit -qm "$study: $1" -- "$results" || true; fi
}

# same_engine_check [BENCHMARK COMMITTED_SAMPLES]: the base model again on the first 40 questions of BENCHMARK (default:
# GSM8K, against the evidence study's committed base samples), compared with its committed samples grade for grade
# (studies/common/same_evaluation.py exits 1 on any difference, stopping the driver before it spends hours on an
# evaluation that is not the committed arms'). The same settings grade differently on another CPU class
# (studies/onpolicy/README.md: a CPU with AMX against the avx512_bf16-only one that graded the committed arms).
same_engine_check() {
  local benchmark=${1:-gsm8k} committed=${2:-studies/evidence/results/base/gsm8k.samples.jsonl.gz}
  step eval --config "$config" --run_dir "$runs-eval-check-$benchmark" "${eval_engine[@]}" --eval.benchmarks "[$benchmark]" --eval.limit 40
  python3 studies/common/same_evaluation.py "$runs-eval-check-$benchmark/eval/base/$benchmark.samples.jsonl" "$committed"
}

# engine_anchor_here OUT PLANS BENCHMARK_ARRAY...: the base model graded by this machine's engine, the anchor of the arms
# graded here (`engine_anchors` in ssb.stats.analysis_plan; its name from studies/common/engine_anchor.py). A committed
# anchor of that name in the results folders the reports read (anchor_results: evidence_recompute.py reads the evidence
# study's and, with --also, the on-policy study's) is reused only if it records this CPU's kernel flags and graded every
# benchmark asked for; otherwise the driver stops, since the name is taken. With none committed, the base model is
# graded on each benchmark whose argument array is named (the driver's gsm8k, math), exported to OUT (the driver's
# results folder) and committed; each plan in PLANS (space-separated) that does not list the name yet gets a reminder,
# since a report anchors only on declared models.
anchor_results=(studies/evidence/results studies/onpolicy/results)

engine_anchor_here() {
  local out=$1 plans=$2 name committed benchmark plan i needs=()
  local results=$out  # commit adds $results: the folder this function exports into
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
  python3 studies/common/evidence_export.py arm "$name" --eval-dir "$runs-$name" --model base --results "$out"
  commit "$name: the base model graded by this engine (the anchor of its arms)"
  for plan in $plans; do
    grep -q "engine_anchors:.*\b$name\b" "$plan" ||
      echo "note: $name is not yet in $plan's engine_anchors; append it before reading the report" >&2
  done
}
