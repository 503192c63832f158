#!/usr/bin/env bash
# Iterated rounds: 3 rounds of SSB and 3 rounds of SFT (cross-entropy on the same hint-refined solutions) on
# the evidence study's setup (config `evidence`: packaged 0.5B model, GSM8K train, K = 4), each
# round evaluated greedy on GSM8K test (first 300) against the same questions.
#
#   bash studies/rounds/rounds.sh [ssb] [sft]      (default: both)
#
# Every round trains without the refined solutions shorter than 32 tokens (distill.min_solution_tokens):
# the evidence study found that the few that only restate their answer teach SFT to answer without
# reasoning, which would decide an SSB-against-SFT comparison by itself. ROUNDS_MIN_SOLUTION_TOKENS=0
# runs the paper's rounds, keeping them (round 1 then is the evidence arm trained on all solutions).
#
# Round 1 of each arm is the evidence study's finished arm (studies/evidence/evidence.sh ablations; with 0: main), copied:
# the copy's stages are finished with the same config, so `ssb run` skips them and round 1 here is
# exactly that arm; it only adds round 1's evaluation on the 300 questions. Rounds 2 and 3 take the
# next 960 training questions each (rounds_data: fresh) and start from the previous round's merged
# model. Every stage resumes where it stopped.
#
# The arms advance together, one round at a time (rounds 1-2 of SSB, rounds 1-2 of SFT, round 3 of SSB,
# round 3 of SFT; round 1 goes with round 2 because a run of one round is a plain run, with no rounds.json
# to export), so that each round lands with its paired comparison rather than one arm's three rounds
# before the other's first. After each round of an arm, its rounds so far (training data, stats, per-question eval
# samples, report and curve) are exported to studies/rounds/results/rounds-<arm>/ and, with
# EVIDENCE_COMMIT=1, committed, as is the progress of a round under way every ROUNDS_CHECKPOINT_MINUTES (20). A folder
# missing here but exported is first rebuilt from its export (studies/common/evidence_restore.py: the trained weights are
# retrained, and must come out bit for bit as recorded; the rest resumes). Once both arms have exported rounds, one
# report sets their curves side by side in studies/rounds/results/rounds-compared-min32/ (-min32 as the arms';
# studies/rounds/rounds_recompute.py, from the exports alone). `--rounds n` then `--rounds n+1` on one folder is the same
# run as `--rounds n+1`: the round count is in no stage's inputs. An arm that fails is not advanced
# further and does not stop the other; the script then exits non-zero.
set -euo pipefail
config=evidence
runs=${EVIDENCE_RUNS:-runs/evidence}
total_rounds=3
min_tokens=${ROUNDS_MIN_SOLUTION_TOKENS:-32}
checkpoint_minutes=${ROUNDS_CHECKPOINT_MINUTES:-20}
case $checkpoint_minutes in ''|*[!0-9]*|0*) echo "ROUNDS_CHECKPOINT_MINUTES is a whole number of minutes, 1 or more" >&2; exit 2 ;; esac
case $min_tokens in 0|32) ;; *) echo "ROUNDS_MIN_SOLUTION_TOKENS is 0 or 32 (the evidence study trained round 1 with those)" >&2; exit 2 ;; esac
suffix=""; [ "$min_tokens" = 0 ] || suffix="-min$min_tokens"  # the evidence arms' and the rounds' folder names
results=studies/rounds/results study="Iterated rounds"  # what commit commits, and its title

. studies/common/lib.sh  # copy_once, step, commit
# Every $checkpoint_minutes minutes while this script lives, export (and commit) arm $1's progress from folder $2.
# TERM ends it between two exports: one under way finishes first.
checkpoints() {
  local pause script=$$
  trap 'kill $pause 2>/dev/null; exit 0' TERM
  while sleep $((checkpoint_minutes * 60)) & pause=$!; wait $pause; kill -0 "$script" 2>/dev/null; do
    python3 studies/common/evidence_export.py rounds "$1" "$2" && commit "$3 under way"
  done
}

# Rounds 1..$2 of arm $1 (finished rounds are skipped), then export and commit.
rounds_of() {
  local arm=$1 rounds=$2; shift 2
  local first="$runs-$arm$suffix" folder="$runs-rounds-$arm$suffix" exported="rounds-$arm$suffix"
  if [ ! -e "$folder" ] && [ -f "studies/rounds/results/$exported/rounds.json" ]; then
    # Another machine's rounds, from their committed export: weights are retrained, the rest resumes.
    python3 studies/common/evidence_restore.py "$exported" "$folder"
  fi
  if [ ! -e "$folder" ] && [ ! -d "$first/distill/adapter" ]; then
    echo "$first has no trained adapter: run studies/evidence/evidence.sh first (round 1 is that arm)" >&2
    exit 1
  fi
  copy_once "$first" "$folder"
  # Meanwhile, every $checkpoint_minutes minutes, the progress so far is exported (and committed), so that a
  # session that ends mid-round loses at most that much: studies/common/evidence_restore.py resumes from it.
  checkpoints "$exported" "$folder" "$arm$suffix, round $rounds of $total_rounds" &
  local checkpointing=$! status=0
  step run --config $config --run_dir "$folder" --rounds "$rounds" --eval.limit 300 --distill.min_solution_tokens "$min_tokens" "$@" || status=$?
  kill $checkpointing 2>/dev/null || true; wait $checkpointing 2>/dev/null || true
  # A failed run is not exported: what it left (a retraining that came out otherwise, say) is no result.
  [ $status -eq 0 ] || return $status
  python3 studies/common/evidence_export.py rounds "$exported" "$folder" && commit "$arm$suffix, round $rounds of $total_rounds"
}

arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(ssb sft)
for arm in "${arms[@]}"; do
  case $arm in ssb|sft) ;; *) echo "unknown arm $arm (ssb or sft)" >&2; exit 2 ;; esac
done
failed=" "
for rounds in $(seq 2 $total_rounds); do
  for arm in "${arms[@]}"; do
    case $failed in *" $arm "*) continue ;; esac
    options_of_arm=()
    [ "$arm" = sft ] && options_of_arm=(--distill.objective sft)
    # set -e holds inside the subshell only when the subshell is not itself tested (no `|| ...` on it).
    set +e; ( set -e; rounds_of "$arm" "$rounds" "${options_of_arm[@]}" ); status=$?; set -e
    [ $status -eq 0 ] || { echo "== arm $arm failed in round $rounds (exit $status); going on without it" >&2; failed+="$arm "; }
  done
  if [ -f "studies/rounds/results/rounds-ssb$suffix/rounds.json" ] && [ -f "studies/rounds/results/rounds-sft$suffix/rounds.json" ]; then
    # Both curves in one report, and round r of SSB against round r of SFT on the same questions, from the exports:
    # each arm's latest committed rounds, whether or not its run folder is on this machine.
    python3 studies/rounds/rounds_recompute.py --out "studies/rounds/results/rounds-compared$suffix" "rounds-ssb$suffix" "rounds-sft$suffix" \
      && commit "SSB rounds against SFT rounds, through round $rounds"
  fi
done
[ "$failed" = " " ] || { echo "failed arms:$failed" >&2; exit 1; }
