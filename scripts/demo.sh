#!/usr/bin/env bash
# The whole pipeline on a synthetic scene, on CPU, in minutes (measured: see README):
#   synth -> info -> prepare -> SAR-W-SimMIM pretraining -> fine-tuning (pretrained and
#   random init) -> evaluation on the validation split -> full-scene prediction -> report.md
# Usage: scripts/demo.sh [OUT_DIR] [VENV_BIN]. Re-running reuses finished stages.
# Every stage computes with DEMO_THREADS threads (default 1: the same numbers on any
# machine, and no oversubscription on cores other jobs share); fine-tuning from random
# init runs beside pretraining, on a second core. Each stage's wall-clock time goes to
# OUT_DIR/timings.tsv and the report (DEMO_INSTALL_SECONDS, from make demo, adds a row).
set -euo pipefail
out=${1:-demo}
bin=${2:-.venv/bin}
alos2fm="$bin/alos2fm"
threads=${DEMO_THREADS:-1}
export OMP_NUM_THREADS=$threads
mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }
start=$(date +%s.%N)

timings="$out/timings.tsv"
printf 'stage\tseconds\tthreads\n' >"$timings"
if [ -n "${DEMO_INSTALL_SECONDS:-}" ]; then
  printf 'install (make install)\t%s\t-\n' "$DEMO_INSTALL_SECONDS" >>"$timings"
fi
# timed NAME THREADS COMMAND...: run a stage and append its wall-clock seconds.
timed() {
  local name=$1 used=$2 t0
  shift 2
  step "$name"
  t0=$(date +%s.%N)
  "$@"
  printf '%s\t%s\t%s\n' "$name" "$(elapsed "$t0")" "$used" >>"$timings"
}
# reused NAME: a stage an earlier run finished.
reused() { printf '%s\treused\t-\n' "$1" >>"$timings"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

product="$out/product/IMG-HH-ALOS2999990010-221119-UBSR2.1GUD.tif"
landcover="$out/product/LC_SYNTHETIC_v23.12.tif"
stage="synth: synthetic ALOS-2-like L2.1 product + land-cover map"
if [ ! -f "$product" ]; then
  timed "$stage" "$threads" "$alos2fm" synth --out "$out/product" --size 2048 --looks 4 --seed 0
else reused "$stage"; fi

timed "info: what the reader parsed" "$threads" "$alos2fm" info "$product"

stage="prepare: calibrate, 64 px patches, forest capped, spatial split"
if [ ! -f "$out/dataset/index.parquet" ]; then
  timed "$stage" "2 workers x $threads" "$alos2fm" prepare "$product" --labels "$landcover" \
    --out "$out/dataset" --patch-size 64 --stride 64 --block-size 512 --buffer 64 \
    --split-fractions 0.6,0.2,0.2 --balance forest_capped --workers 2 --seed 0
else reused "$stage"; fi

# Fine-tuning is most of the demo's time: 400 steps (the preset's 600 gained ~0.02 validation
# mIoU in one run), validated every 100.
finetune() { # finetune INIT: one fine-tuning run (pretrained or random), unless it finished
  local init=$1 run="$out/finetune-$1" encoder=()
  local stage="finetune from $init initialisation (cpu-tiny-seg, 400 steps)"
  if [ -f "$run/test/metrics.json" ]; then
    reused "$stage"
    return
  fi
  [ "$init" = pretrained ] && encoder=(--encoder "$out/pretrain/encoder.safetensors")
  timed "$stage" "$threads" "$alos2fm" finetune --data "$out/dataset" --preset cpu-tiny-seg \
    "${encoder[@]}" --max-steps 400 --set trainer.val_every_n_steps=100 \
    --set "trainer.threads=$threads" --out "$run"
}

# From random initialisation fine-tuning needs no encoder: it runs on a second core while
# the first pretrains and then fine-tunes from the encoder (its output: finetune-random.log).
finetune random >"$out/finetune-random.log" 2>&1 &
random_run=$!

stage="pretrain: SAR-W-SimMIM, tiny Swin (cpu-tiny-simmim)"
if [ ! -f "$out/pretrain/encoder.safetensors" ]; then
  timed "$stage" "$threads" "$alos2fm" pretrain --data "$out/dataset" --preset cpu-tiny-simmim \
    --method simmim --weighting sar --set "trainer.threads=$threads" --out "$out/pretrain"
else reused "$stage"; fi

finetune pretrained
step "finetune from random initialisation (beside the above; log: $out/finetune-random.log)"
if ! wait "$random_run"; then
  tail -n 20 "$out/finetune-random.log" >&2
  echo "fine-tuning from random initialisation failed: see $out/finetune-random.log" >&2
  exit 1
fi

# Fine-tuning scored the test split already; evaluate shows the validation split that
# chose the checkpoint (how optimistic a selected model's own validation score is).
timed "evaluate the pretrained run on the validation split" "$threads" \
  "$alos2fm" evaluate --checkpoint "$out/finetune-pretrained/checkpoints/best.ckpt" \
  --data "$out/dataset" --split val --out "$out/evaluation-val" --threads "$threads" --overwrite

timed "predict the whole scene" "$threads" \
  "$alos2fm" predict "$product" --checkpoint "$out/finetune-pretrained/checkpoints/best.ckpt" \
  --out "$out/map/landcover_map.tif" --confidence --threads "$threads" --overwrite

printf 'demo (all stages)\t%s\t-\n' "$(elapsed "$start")" >>"$timings"
step "report"
"$bin/python" scripts/demo_report.py "$out"
echo "demo finished in $(elapsed "$start") s; report: $out/report.md"
