#!/usr/bin/env bash
# Train the five Noise2Music stages from their recipes and assemble the bundle - the recipe of the
# shipped noise2music default. Resumable: run it again after an interruption and every stage goes
# on from its newest checkpoint (finished stages return at once).
#
#   scripts/train_noise2music.sh [RUNS_DIR [BUNDLE_DIR]]
#   JOBS=2 EXTRA="--set train.steps=4000" scripts/train_noise2music.sh runs tunecraft/bundles/noise2music-tiny
#
# JOBS trainings run at a time (default: the number of cores), each with one thread: on a small CPU
# box two threads per process stall each other. On a GPU machine set JOBS=1 and let each run use it.
# EXTRA is passed to every `tunecraft train` (e.g. --set train.batch_size=32). Logs: RUNS_DIR/<recipe>.log.
set -euo pipefail
RUNS=${1:-runs}
OUT=${2:-tunecraft/bundles/noise2music-tiny}
JOBS=${JOBS:-$(nproc)}
EXTRA=${EXTRA:-}
mkdir -p "$RUNS"
if [ ! -f data/synth/train.jsonl ]; then
  tunecraft data synth --n 2000 --duration 10 --seed 1 --out data/synth
fi
# the spectrogram path first: its stages are the cheapest to train
recipes=(n2m-spec-generator n2m-vocoder n2m-sr-cascader n2m-wave-generator n2m-wave-cascader)
export RUNS EXTRA
printf '%s\n' "${recipes[@]}" | xargs -P "$JOBS" -I{} bash -c \
  'echo "training {} (log: $RUNS/{}.log)"; OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} tunecraft train {} --out "$RUNS/{}" --resume --quiet $EXTRA >> "$RUNS/{}.log" 2>&1'
tunecraft assemble noise2music "$OUT" --runs "$RUNS" --default-path spectrogram \
  --description "Noise2Music cascade (spectrogram and waveform paths + 16->24 kHz SR), small CPU U-Nets trained on the procedural corpus"
