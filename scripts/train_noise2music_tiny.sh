#!/usr/bin/env bash
# The runs behind the shipped noise2music-tiny bundle (both paths + the SR cascader), with the flags
# those runs used (README, Noise2Music section). Resumable: run it again after an interruption; each
# stage goes on from its newest checkpoint and a finished stage returns at once.
# About 8 h on 2 CPU cores, in five rounds of stages, those of a round side by side, one thread each:
#   round 1 (~2 h): the spectrogram generator without key conditioning, the vocoder, the SR cascader;
#   round 2 (~2 h): the spectrogram generator with the key profile, warm-started from round 1 (its
#                   extra input channels start at zero: train.init_from), the waveform generator and
#                   the waveform cascader;
#   round 3 (~50 min): the waveform generator with the triad reference, warm-started from round 2
#                   (its 8 new input channels start at zero);
#   round 4 (~105 min): the waveform generator with the chord reference, warm-started from round 3
#                   (its 12 new input channels start at the fresh model's random values);
#   round 5 (~100 min): the spectrogram generator with the chord templates, warm-started from round 2,
#                   then on standardised data, warm-started from that.
#
#   scripts/train_noise2music_tiny.sh [RUNS_DIR [BUNDLE_DIR]]
#
# The recipes hold the architectures and options (tunecraft/recipes/n2m-*.toml); the flags below
# only shorten the schedules to what 2 cores train in a session. The vocoder runs a 4,000-step
# schedule and ships its step 1,000 (it was stopped there: with its consistency projection the
# vocoder keeps key, mode and tempo of real spectrograms on 12 of 12 clips from step 500 on).
# Round 2 ran in fp32: this project's second machine has no native bf16, where autocast to bf16
# is 2x slower than fp32 (round 1's machine had it). The waveform generator trains on 5 s crops
# (its self-attention runs on any length; half the cost of full clips).
# scripts/train_noise2music.sh trains all five stages at the recipes' full length instead.
set -euo pipefail
RUNS=${1:-runs}
OUT=${2:-tunecraft/bundles/noise2music-tiny}
mkdir -p "$RUNS"
[ -f data/synth/train.jsonl ] || tunecraft data synth --n 2000 --duration 10 --seed 1 --out data/synth --workers 2

last_step() {  # newest checkpoint step of a run (0 without one)
  local best=0 f
  for f in "$1"/checkpoints/step-*.pt; do
    [ -e "$f" ] || continue
    f=${f##*/step-}; f=$((10#${f%.pt})); [ "$f" -gt "$best" ] && best=$f
  done
  echo "$best"
}
train() {  # train RECIPE OUT_DIR STOP_STEP FLAGS...: one stage, resumable, stopped with a checkpoint at STOP_STEP
  local recipe=$1 out=$2 stop=$3; shift 3
  local done_steps
  done_steps=$(last_step "$out")
  if [ "$done_steps" -ge "$stop" ]; then echo "stage $out: done"; return; fi
  echo "stage $out: steps $done_steps -> $stop (log: $out.log)"
  OMP_NUM_THREADS=1 tunecraft train "$recipe" --out "$out" --resume --quiet \
    --set train.max_steps_this_run=$((stop - done_steps)) --set train.sample_every=100000 "$@" >> "$out.log" 2>&1
}

# round 1
train n2m-spec-generator "$RUNS/n2m-spec-generator" 5000 --set train.steps=5000 --set train.warmup_steps=300 \
  --set task.model.key_profile=false --set task.model.chord_mel=false --set task.model.standardize=false \
  --set task.model.unet.cond_channels=10 &
train n2m-vocoder "$RUNS/n2m-vocoder" 1000 --set train.steps=4000 --set train.warmup_steps=200 --set train.keep_checkpoints=10 &
train n2m-sr-cascader "$RUNS/n2m-sr-cascader" 2000 --set train.steps=2000 --set train.warmup_steps=200 &
wait
# round 2 (the shipped run warm-started from the exported fp16 copy of round 1's step 5,000, the
# spectrogram_generator of tunecraft/bundles/noise2music-tiny at commit 9c4ceca)
train n2m-spec-generator "$RUNS/n2m-spec-generator-key" 2500 --set train.steps=2500 --set train.warmup_steps=200 \
  --set train.precision=fp32 --set train.init_from="$RUNS/n2m-spec-generator" --set task.model.chord_mel=false \
  --set task.model.standardize=false --set task.model.unet.cond_channels=22 &
train n2m-wave-generator "$RUNS/n2m-wave-generator" 3000 --set train.steps=3000 --set train.warmup_steps=300 \
  --set data.crop_seconds=5.0 --set 'task.model.triad_octaves=[]' --set 'task.model.chord_octaves=[]' \
  --set task.model.unet.cond_channels=28 &
train n2m-wave-cascader "$RUNS/n2m-wave-cascader" 3000 --set train.steps=3000 --set train.warmup_steps=300 &
wait
# round 3 (the shipped run warm-started from the exported fp16 copy of round 2's waveform generator,
# the waveform_generator of tunecraft/bundles/noise2music-tiny at commit 81f7bef)
train n2m-wave-generator "$RUNS/n2m-wave-generator-triad" 2500 --set train.steps=2500 --set train.warmup_steps=200 \
  --set data.crop_seconds=5.0 --set train.precision=fp32 --set train.init_from="$RUNS/n2m-wave-generator" \
  --set 'task.model.chord_octaves=[]' --set task.model.unet.cond_channels=36
# round 4 (session 13: the shipped run warm-started from round 3's run directory, its step 2,500)
train n2m-wave-generator "$RUNS/n2m-wave-chords" 4500 --set train.steps=5000 --set train.warmup_steps=100 \
  --set data.crop_seconds=5.0 --set train.precision=fp32 --set train.init_from="$RUNS/n2m-wave-generator-triad" \
  --set train.init_grown=fresh
# round 5 (sessions 13-14): the spectrogram generator with the chord templates, warm-started from
# round 2 (its 80 new input channels at fresh random values), 2,500 steps of a 3,000-step schedule;
# then standardised, warm-started from that run's step 2,500
ckpt() { printf '%s/%s/checkpoints/step-%08d.pt' "$RUNS" "$1" "$2"; }
train n2m-spec-generator "$RUNS/n2m-spec-chords" 2500 --set train.steps=3000 --set train.warmup_steps=100 \
  --set train.precision=fp32 --set train.init_from="$RUNS/n2m-spec-generator-key" --set train.init_grown=fresh \
  --set task.model.standardize=false
train n2m-spec-generator "$RUNS/n2m-spec-std" 3000 --set train.steps=3000 --set train.warmup_steps=100 \
  --set train.precision=fp32 --set train.init_from="$(ckpt n2m-spec-chords 2500)"

tunecraft export "$(ckpt n2m-spec-std 3000)" "$RUNS/export/spectrogram_generator"
tunecraft export "$(ckpt n2m-vocoder 1000)" "$RUNS/export/spectrogram_vocoder"
tunecraft export "$(ckpt n2m-sr-cascader 2000)" "$RUNS/export/sr_cascader"
tunecraft export "$(ckpt n2m-wave-chords 4500)" "$RUNS/export/waveform_generator"
tunecraft export "$(ckpt n2m-wave-cascader 3000)" "$RUNS/export/waveform_cascader"
tunecraft assemble noise2music "$OUT" --stage spectrogram_generator="$RUNS/export/spectrogram_generator" \
  --stage spectrogram_vocoder="$RUNS/export/spectrogram_vocoder" --stage sr_cascader="$RUNS/export/sr_cascader" \
  --stage waveform_generator="$RUNS/export/waveform_generator" --stage waveform_cascader="$RUNS/export/waveform_cascader" \
  --sampling sr_cascader.steps=8 --sampling waveform_generator.fact_guidance=3 --default-path spectrogram \
  --description "Noise2Music, both paths (text -> log-mel -> 16 kHz, text -> 3.2 kHz -> 16 kHz) and 16 -> 24 kHz SR, small CPU U-Nets trained on the procedural corpus"
