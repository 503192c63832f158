#!/usr/bin/env bash
# The on-policy study: on-policy self-distillation with privileged context (ssb onpolicy, TRL's SDFT trainer)
# beside SSB, SFT-clean and GRPO, on the evidence study's model, questions and evaluation.
#
#   bash studies/onpolicy/onpolicy.sh [PART ...]
#   PART: data, pilot (pilot_lr2: its last setting alone; pilot_amx: that setting beside the defaults and the base
#         model again, all graded on one machine, pilot-amx.yaml, which answered it: the pilot is done), main_gold,
#         main_hint, main (both), seed_1, seed_2, seeds (both), report; default: data main
#
# pilot: the short runs that set the arm's defaults (pilot.yaml, declared before they run): the gold-solution context,
#        30 optimiser steps each, the defaults against forward KL, reverse KL and SSB's learning rate, greedy on SVAMP
#        test[:200] as the development set, so that no GSM8K test question is seen before the study's runs.
# data:  the evidence run's training data (rollouts and refinements, with their recorded inputs) back into a run
#        folder, from the committed export of the rounds study (its round 1 is the evidence run: the files are
#        byte-identical to studies/evidence/results/phase1/). Regenerating them would not reproduce them (the
#        engine's inference precision `auto` has since resolved to f32 instead of bf16).
# main:  one seed each of the two declared contexts, gold-solution (every question trains) and hint-pair (SSB's
#        hinted pair: mixed questions only), at SSB's 90 optimiser steps; GSM8K test[:500] greedy and MATH500[:200].
#        main_gold and main_hint are its two halves, each after base_here (the base model graded by this engine, once
#        per engine: the anchor of the arms it grades, plan.yaml's amendment of 2026-12-05).
# seeds: training seeds 1 and 2 (seed_1, seed_2) of the context plan.yaml's rule selects (the higher GSM8K pass@1 of
#        seed 0), GSM8K test[:500]; plan-seeds.yaml must be committed before this part runs.
# report: the declared plan's report (plan-seeds.yaml where committed) with its plots, and the diagnostics, into results/.
#
# Every step is a resumable ssb stage. After each arm its samples, summaries and training stats are exported to
# studies/onpolicy/results/<arm>/ (studies/common/evidence_export.py); with EVIDENCE_COMMIT=1 they are committed.
# SSB, SFT-clean, base and GRPO are the evidence study's committed arms (same questions, same greedy evaluation, graded
# on an AMD EPYC with avx512_bf16; an arm graded on another CPU class is anchored on that engine's base, base_here).
set -euo pipefail
set -f  # no globbing: "[gsm8k]" is an argument, not a pattern
config=evidence
runs=${ONPOLICY_RUNS:-runs/onpolicy}
data_dir=$runs-data
steps=90   # SSB's optimiser steps (studies/evidence/results/ssb/training-stats.json: distill.steps)
gsm8k=(--eval.benchmarks "[gsm8k]" --eval.limit 500)
math=(--eval.benchmarks "[math500]" --eval.limit 200)
results=studies/onpolicy/results study="On-policy study"  # what commit commits, and its title
# The evidence study's evaluation engine, pinned as studies/evidence/evidence.sh pins it (bf16 activations, what
# OpenVINO chose on the CPUs that graded the committed arms): a new arm is graded as the committed arms it meets were.
eval_engine=(--backend.openvino.inference_precision bf16)

. studies/common/lib.sh  # copy_once, step, commit, same_engine_check, engine_anchor_here

export_arm() {  # export_arm NAME RUN_DIR
  python3 studies/common/evidence_export.py arm "$1" --eval-dir "$2" --model onpolicy --train-dir "$2" --results "$results"
}

data() {
  [ -e "$data_dir" ] || python3 studies/common/evidence_restore.py --round 1 rounds-ssb-min32 "$data_dir"
}

arm() {  # [ARM_STEPS=N] [ARM_OPTIONS="ONPOLICY_OPTION..."] arm NAME CONTEXT SEED BENCHMARK_ARGS...
  local name=$1 context=$2 seed=$3; shift 3
  local dir=$runs-$name
  copy_once "$data_dir" "$dir"
  # shellcheck disable=SC2086  # ARM_OPTIONS is a list of options, split on purpose
  step onpolicy --config $config --run_dir "$dir" --arm onpolicy --onpolicy.context "$context" --onpolicy.seed "$seed" \
    --onpolicy.max_steps "${ARM_STEPS:-$steps}" ${ARM_OPTIONS:-}
  for benchmark in "$@"; do
    # shellcheck disable=SC2086  # each argument is one benchmark's options, split on purpose
    step eval --config $config --run_dir "$dir" --eval.skip_base true --eval.adapters "[onpolicy=$dir/onpolicy/adapter]" \
      "${eval_engine[@]}" $benchmark
  done
  export_arm "$name" "$dir" && commit "$name"
}

pilot() {
  local svamp=(--eval.benchmarks "[svamp]" --eval.limit 200)
  step eval --config $config --run_dir "$runs-pilot-base" "${eval_engine[@]}" "${svamp[@]}"
  python3 studies/common/evidence_export.py arm pilot-base --eval-dir "$runs-pilot-base" --model base --results "$results"
  commit "pilot: the base model on SVAMP"
  ARM_STEPS=30 arm pilot-jsd gold-solution 0 "${svamp[*]}"
  ARM_STEPS=30 ARM_OPTIONS="--onpolicy.alpha 0" arm pilot-fkl gold-solution 0 "${svamp[*]}"
  ARM_STEPS=30 ARM_OPTIONS="--onpolicy.alpha 1" arm pilot-rkl gold-solution 0 "${svamp[*]}"
  pilot_lr2
}

pilot_lr2() {  # the pilot's last setting alone (the others' results are committed)
  local svamp=(--eval.benchmarks "[svamp]" --eval.limit 200)
  same_engine_check svamp "$results/pilot-base/svamp.samples.jsonl.gz"  # it meets the committed pilot arms
  # Micro-steps of one completion: the same update in a quarter of the memory (pilot.yaml's amendment: with 4 per
  # micro-step this run passed 24 GB at step 25).
  ARM_STEPS=30 ARM_OPTIONS="--onpolicy.lr 2e-4 --onpolicy.batch_size 1 --onpolicy.gradient_accumulation_steps 4" \
    arm pilot-lr2 gold-solution 0 "${svamp[*]}"
  python3 studies/evidence/evidence_recompute.py --plan studies/onpolicy/pilot.yaml --also "$results"
}

pilot_amx() {  # pilot-amx.yaml: the learning-rate question on one machine's engine, with the defaults and the base again
  local svamp=(--eval.benchmarks "[svamp]" --eval.limit 200)
  step eval --config $config --run_dir "$runs-pilot-amx-base" "${eval_engine[@]}" "${svamp[@]}"
  python3 studies/common/evidence_export.py arm pilot-amx-base --eval-dir "$runs-pilot-amx-base" --model base --results "$results"
  commit "pilot-amx: the base model on SVAMP"
  ARM_STEPS=30 arm pilot-amx-jsd gold-solution 0 "${svamp[*]}"
  ARM_STEPS=30 ARM_OPTIONS="--onpolicy.lr 2e-4" arm pilot-amx-lr2 gold-solution 0 "${svamp[*]}"
  python3 studies/evidence/evidence_recompute.py --plan studies/onpolicy/pilot-amx.yaml --also "$results"
}

# Each part below takes about two hours on a 2-core CPU, so that each fits in one sitting of the machine: a run folder
# is not kept between sittings here, and an arm's results are committed as soon as it is evaluated.
# base_here: the base model graded by this machine's engine on the study's questions, the anchor of every arm this
# engine grades (plan.yaml's amendment of 2026-12-05: the same settings grade differently on another CPU class, and the
# committed arms' adapters cannot be graded again). Committed once per engine; a committed anchor is reused only where
# it records this CPU's kernel flags. Its name must be in the engine_anchors of plan.yaml (and of plan-seeds.yaml, which
# repeats them) for the report to use it.
base_here() { engine_anchor_here "$results" "studies/onpolicy/plan.yaml studies/onpolicy/plan-seeds.yaml" gsm8k math; }

main_gold() {
  base_here
  arm onpolicy-gold gold-solution 0 "${gsm8k[*]}" "${math[*]}"
}

main_hint() {
  base_here
  arm onpolicy-hint hint-pair 0 "${gsm8k[*]}" "${math[*]}"
}

main() { main_gold; main_hint; }

seed() {  # seed N: training seed N of the context plan.yaml's rule selects (the higher GSM8K pass@1 of seed 0)
  [ -f studies/onpolicy/plan-seeds.yaml ] || { echo "declare plan-seeds.yaml (the selected context's seeds) first" >&2; exit 1; }
  local best context
  best=$(python3 studies/onpolicy/selected_context.py)
  [ -n "$best" ] || { echo "no seed-0 GSM8K summary to select a context from" >&2; exit 1; }
  context=$([ "$best" = onpolicy-gold ] && echo gold-solution || echo hint-pair)
  base_here
  arm "$best-s$1" "$context" "$1" "${gsm8k[*]}"
}
seed_1() { seed 1; }
seed_2() { seed 2; }
seeds() { seed_1; seed_2; }

report() {  # the plan's report and its two plots into results/ (report.md, accuracy.png, comparisons.png), the diagnostics
  local plan=studies/onpolicy/plan.yaml out arms
  [ -f studies/onpolicy/plan-seeds.yaml ] && plan=studies/onpolicy/plan-seeds.yaml
  out=$(mktemp -d)
  python3 studies/evidence/evidence_recompute.py --plan "$plan" --plan-models-only --also "$results" --out "$out"
  cp "$out/report.md" "$results/report.md"
  for figure in accuracy.png comparisons.png; do [ ! -f "$out/$figure" ] || cp "$out/$figure" "$results/$figure"; done
  arms=$(ls "$results" | grep "^onpolicy-" | tr "\n" " ")  # no glob: the script runs with set -f
  # shellcheck disable=SC2086  # the arms are words
  python3 studies/onpolicy/diagnostics.py --benchmark gsm8k base base-amx ssb sft-min32 grpo grpo-wall $arms
  commit "report"
}

for part in "${@:-data main}"; do for p in $part; do "$p"; done; done
