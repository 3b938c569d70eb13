#!/usr/bin/env bash
# The whole pipeline on a synthetic scene, on CPU, in about three minutes (187 s measured):
#   synth -> info -> prepare -> SAR-W-SimMIM pretraining -> fine-tuning (pretrained and
#   random init) -> evaluation -> full-scene prediction -> report.md
# Usage: scripts/demo.sh [OUT_DIR] [VENV_BIN]. Re-running reuses finished stages.
set -euo pipefail
out=${1:-demo}
bin=${2:-.venv/bin}
alos2fm="$bin/alos2fm"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

product="$out/product/IMG-HH-ALOS2999990010-221119-UBSR2.1GUD.tif"
landcover="$out/product/LC_SYNTHETIC_v23.12.tif"
if [ ! -f "$product" ]; then
  step "synthetic ALOS-2-like L2.1 product + land-cover map"
  "$alos2fm" synth --out "$out/product" --size 2048 --looks 4 --seed 0
fi

step "what the reader parsed"
"$alos2fm" info "$product"

if [ ! -f "$out/dataset/index.parquet" ]; then
  step "prepare: calibrate, 64 px patches, forest capped, spatial split"
  "$alos2fm" prepare "$product" --labels "$landcover" --out "$out/dataset" \
    --patch-size 64 --stride 64 --block-size 512 --buffer 64 --split-fractions 0.6,0.2,0.2 \
    --balance forest_capped \
    --workers 2 --seed 0
fi

if [ ! -f "$out/pretrain/encoder.safetensors" ]; then
  step "pretrain: SAR-W-SimMIM, tiny Swin (cpu-tiny-simmim)"
  "$alos2fm" pretrain --data "$out/dataset" --preset cpu-tiny-simmim --method simmim \
    --weighting sar --out "$out/pretrain"
fi

for init in pretrained random; do
  run="$out/finetune-$init"
  if [ ! -f "$run/test/metrics.json" ]; then
    step "finetune from $init initialisation (cpu-tiny-seg)"
    encoder=()
    [ "$init" = pretrained ] && encoder=(--encoder "$out/pretrain/encoder.safetensors")
    "$alos2fm" finetune --data "$out/dataset" --preset cpu-tiny-seg "${encoder[@]}" --out "$run"
  fi
done

step "evaluate the pretrained run on the test split"
"$alos2fm" evaluate --checkpoint "$out/finetune-pretrained/checkpoints/best.ckpt" \
  --data "$out/dataset" --split test --out "$out/evaluation"

step "predict the whole scene"
"$alos2fm" predict "$product" --checkpoint "$out/finetune-pretrained/checkpoints/best.ckpt" \
  --out "$out/map/landcover_map.tif" --confidence

step "report"
"$bin/python" scripts/demo_report.py "$out"
echo "demo finished in $(( $(date +%s) - start )) s; report: $out/report.md"
