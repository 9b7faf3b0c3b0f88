#!/usr/bin/env bash
# The whole chain of runs behind the shipped musicgen-tiny bundle, stage by stage, with the flags
# those runs used (README, MusicGen section, tells what each stage was for). Resumable: run it
# again after an interruption; each stage goes on from its newest checkpoint and a finished stage
# returns at once. About 13 h on 2 CPU cores; on a GPU set PROCS=1.
#
#   scripts/train_musicgen_tiny.sh [RUNS_DIR [BUNDLE_DIR]]
#
# PROCS processes per stage (default 2, one thread each, under torchrun; batch 8 per process).
# The corpus: the 2,000-clip corpus for stages 1-2, then a 5,000-clip corpus whose first 2,000
# clips are the same compositions (stages 3-5 train on the union manifest that lists the first
# corpus's files and clips 2,000-4,999 of the second, as the shipped runs did; see README).
# The shipped runs were interrupted and resumed several times with these settings, so a rerun
# follows the same schedules but not the same data order: expect the same figures within noise.
set -euo pipefail
RUNS=${1:-runs}
OUT=${2:-tunecraft/bundles/musicgen-tiny}
PROCS=${PROCS:-2}
FINAL_STEP=${FINAL_STEP:-1000}  # the stage-5 step that ships (set after the session-9 selection)
mkdir -p "$RUNS"
[ -f data/synth/train.jsonl ] || tunecraft data synth --n 2000 --duration 10 --seed 1 --out data/synth
[ -f data/synth5k/train.jsonl ] || tunecraft data synth --n 5000 --duration 10 --seed 1 --out data/synth5k
if [ ! -f data/synth-union/train.jsonl ]; then
  python - <<'EOF'
import json, os, re
os.makedirs("data/synth-union", exist_ok=True)
for split in ("train", "valid", "test"):
    rows = []
    for line in open(f"data/synth/{split}.jsonl"):  # the first corpus, paths made relative to the union
        r = json.loads(line)
        rows.append({**r, "path": "../synth/" + r["path"], "info_path": "../synth/" + r["info_path"]})
    for line in open(f"data/synth5k/{split}.jsonl"):  # clips 2,000-4,999 of the second
        r = json.loads(line)
        if int(re.match(r"audio/(\d+)_", r["path"]).group(1)) >= 2000:
            rows.append({**r, "path": "../synth5k/" + r["path"], "info_path": "../synth5k/" + r["info_path"]})
    with open(f"data/synth-union/{split}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
EOF
fi

train() {  # train OUT_DIR STOP_STEP FLAGS...: one stage, resumable, stopped with a checkpoint at STOP_STEP
  local out=$1 stop=$2; shift 2
  local done_steps=0 f
  for f in "$out"/checkpoints/step-*.pt; do
    [ -e "$f" ] || continue
    f=${f##*/step-}; f=$((10#${f%.pt})); [ "$f" -gt "$done_steps" ] && done_steps=$f
  done
  if [ "$done_steps" -ge "$stop" ]; then echo "stage $out: done"; return; fi
  echo "stage $out: steps $done_steps -> $stop (log: $out.log)"
  OMP_NUM_THREADS=1 torchrun --nproc_per_node "$PROCS" -m tunecraft train musicgen-tiny --out "$out" --resume \
    --quiet --set train.grad_accum=$((2 / PROCS > 0 ? 2 / PROCS : 1)) \
    --set train.max_steps_this_run=$((stop - done_steps)) "$@" >> "$out.log" 2>&1
}
ckpt() { printf '%s/checkpoints/step-%08d.pt' "$1" "$2"; }

NOATTR=(--set 'task.text_attributes=[]' --set 'task.lm.beat_rates=[]')  # stages 1-3 predate the attributes and the clock
# 1. the LM over codec-rvq tokens (the first tokenizer), 2,400 steps
train "$RUNS/musicgen-tiny" 2400 "${NOATTR[@]}" --set task.codec=codec-rvq --set train.steps=2400 --set train.lr=1e-3 \
  --set train.precision=fp32 --set train.keep_checkpoints=2
# 2. moved to vae-gan-rvq tokens (every tensor matches by shape), 2,400 steps
train "$RUNS/musicgen-tiny-vgr" 2400 "${NOATTR[@]}" --set train.init_from="$(ckpt "$RUNS/musicgen-tiny" 2400)" \
  --set train.steps=2400 --set train.lr=1e-3 --set train.precision=fp32 --set train.keep_checkpoints=2
# 3. the 5,000-clip union corpus and the caption contrast, 400 steps of a 6,000-step schedule
train "$RUNS/mg-long" 400 "${NOATTR[@]}" --set data.source=data/synth-union \
  --set train.init_from="$(ckpt "$RUNS/musicgen-tiny-vgr" 2400)" --set train.steps=6000 \
  --set train.lr=5e-4 --set train.warmup_steps=100 \
  --set task.contrast.weight=3.0 --set task.contrast.margin=0.1 --set task.contrast.frames=500 \
  --set task.contrast.items=2 --set 'task.contrast.edits=["mode","tempo","tonic"]' \
  --set train.ckpt_every=200 --set train.keep_checkpoints=3
# 4. prompt attributes (tempo, tonic and mode tokens; the recipe's default), a 3,000-step schedule at
#    lr 5e-4 to step 300, then lowered to 2.5e-4 (the loss rose at 5e-4), stopped at FINAL_STEP
ATTR=(--set data.source=data/synth-union --set train.init_from="$(ckpt "$RUNS/mg-long" 400)"
  --set 'task.lm.beat_rates=[]' --set 'task.text_attributes=["bpm","tonic","mode"]' --set train.steps=3000 --set train.warmup_steps=100
  --set task.contrast.weight=3.0 --set task.contrast.margin=0.1 --set task.contrast.frames=500
  --set task.contrast.items=2 --set 'task.contrast.edits=["mode","tempo","tonic"]'
  --set train.ckpt_every=100 --set train.keep_checkpoints=6)
train "$RUNS/mg-attr" 300 "${ATTR[@]}" --set train.lr=5e-4
train "$RUNS/mg-attr" 1100 "${ATTR[@]}" --set train.lr=2.5e-4
# 5. the beat clock (the recipe's task.lm.beat_rates; its map starts at zero, every other tensor
#    comes from stage 4 at step 1,100), a 1,000-step schedule at lr 5e-4, stopped at FINAL_STEP
train "$RUNS/mg-beat" "$FINAL_STEP" --set data.source=data/synth-union \
  --set train.init_from="$(ckpt "$RUNS/mg-attr" 1100)" --set 'task.text_attributes=["bpm","tonic","mode"]' \
  --set train.steps=1000 --set train.lr=5e-4 --set train.warmup_steps=50 \
  --set task.contrast.weight=3.0 --set task.contrast.margin=0.1 --set task.contrast.frames=500 \
  --set task.contrast.items=2 --set 'task.contrast.edits=["mode","tempo","tonic"]' \
  --set train.ckpt_every=100 --set train.keep_checkpoints=10
tunecraft export "$(ckpt "$RUNS/mg-beat" "$FINAL_STEP")" "$OUT"
