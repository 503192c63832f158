#!/usr/bin/env bash
# The controls comparison, end to end: base vs SSB vs SFT vs random-hint SSB vs GRPO under one
# config, then one evaluation and one report. Every step is a resumable ssb stage, so re-running
# this script after an interruption continues where it stopped and skips what is finished.
#
#   bash studies/controls/controls.sh [CONFIG] [RUNS_PREFIX]     (default: cpu-controls.yaml runs/cpu)
#
# Methods: SSB; SFT on SSB's refined solutions; random-hint SSB (refinement and teacher both see
# another question's rollouts); random-teacher-hint SSB (SSB's refined solutions, teacher targets
# computed after another question's rollouts); GRPO. The SSB variants share one set of rollouts, and
# those that need them SSB's refinements, by copying the finished run folder before the step where
# the methods part ways: each folder then holds (and its report counts) all the compute its method used.
set -euo pipefail
config=${1:-cpu-controls.yaml}
prefix=${2:-runs/cpu}
ssb_dir=$prefix-ssb sft_dir=$prefix-sft random_dir=$prefix-random-hint grpo_dir=$prefix-grpo
teacher_dir=$prefix-random-teacher-hint

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)  # run from any folder: every other path is an argument
. "$here/../common/lib.sh"  # copy_once, step

step rollouts --config "$config" --run_dir "$ssb_dir"
copy_once "$ssb_dir" "$random_dir"
step refine --config "$config" --run_dir "$ssb_dir"
copy_once "$ssb_dir" "$sft_dir"
copy_once "$ssb_dir" "$teacher_dir"
step teacher --config "$config" --run_dir "$ssb_dir"
step distill --config "$config" --run_dir "$ssb_dir"
step distill --config "$config" --run_dir "$sft_dir" --distill.objective sft
step teacher --config "$config" --run_dir "$teacher_dir" --teacher.hint random
step distill --config "$config" --run_dir "$teacher_dir" --teacher.hint random
adapters="ssb=$ssb_dir/distill/adapter,sft=$sft_dir/distill/adapter,random-teacher-hint=$teacher_dir/distill/adapter"
step refine --config "$config" --run_dir "$random_dir" --refine.hint random
# A refinement is kept only when its answer is right; if none is, there is nothing to distil and
# the control is reported as such rather than trained on an empty set.
kept=$(python3 "$here/refinements_kept.py" "$random_dir")
if [ "$kept" -gt 0 ]; then
  step teacher --config "$config" --run_dir "$random_dir" --refine.hint random
  step distill --config "$config" --run_dir "$random_dir" --refine.hint random
  adapters="$adapters,random-hint=$random_dir/distill/adapter"
else
  echo "== random-hint: no refinement was kept ($random_dir/refinements.jsonl has each outcome); not trained, not evaluated" >&2
fi
step grpo --config "$config" --run_dir "$grpo_dir"
step eval --config "$config" --run_dir "$ssb_dir" --eval.adapters "[$adapters,grpo=$grpo_dir/grpo/adapter]"
step report "$ssb_dir"
