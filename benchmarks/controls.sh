#!/usr/bin/env bash
# The controls comparison, end to end: base vs SSB vs SFT vs random-hint SSB vs GRPO under one
# config, then one evaluation and one report. Every step is a resumable ssb stage, so re-running
# this script after an interruption continues where it stopped and skips what is finished.
#
#   bash benchmarks/controls.sh [CONFIG] [RUNS_PREFIX]     (default: configs/cpu-controls.yaml runs/cpu)
#
# SSB, SFT and random-hint share one set of rollouts, and SSB and SFT one set of refinements, by
# copying the finished run folder before the step where the methods part ways: each folder then
# holds (and its report counts) all the compute its method used.
set -euo pipefail
config=${1:-configs/cpu-controls.yaml}
prefix=${2:-runs/cpu}
ssb_dir=$prefix-ssb sft_dir=$prefix-sft random_dir=$prefix-random-hint grpo_dir=$prefix-grpo

copy_once() { [ -e "$2" ] || { rm -rf "$2.partial" && cp -r "$1" "$2.partial" && mv "$2.partial" "$2"; }; }
step() { echo "== $(date -u +%H:%M:%S) ssb $*" >&2; ssb "$@"; }

step rollouts --config "$config" --run_dir "$ssb_dir"
copy_once "$ssb_dir" "$random_dir"
step refine --config "$config" --run_dir "$ssb_dir"
copy_once "$ssb_dir" "$sft_dir"
step teacher --config "$config" --run_dir "$ssb_dir"
step distill --config "$config" --run_dir "$ssb_dir"
step distill --config "$config" --run_dir "$sft_dir" --distill.objective sft
for stage in refine teacher distill; do
  step "$stage" --config "$config" --run_dir "$random_dir" --refine.hint random
done
step grpo --config "$config" --run_dir "$grpo_dir"
step eval --config "$config" --run_dir "$ssb_dir" \
  --eval.adapters "[ssb=$ssb_dir/distill/adapter,sft=$sft_dir/distill/adapter,random-hint=$random_dir/distill/adapter,grpo=$grpo_dir/grpo/adapter]"
step report "$ssb_dir"
