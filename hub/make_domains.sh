#!/usr/bin/env bash
# The shipped domains of hub/refinestyle-synthfaces, each made from a text prompt only by one command.
# Run after `python hub/build_synthfaces.py assemble`; then `python hub/build_synthfaces.py card --recompute`.
# K = 1 token per layer (every convolution and toRGB layer): as good as K = 2 on sketch in bench runs, half the file.
set -euo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/refinestyle
M=hub/refinestyle-synthfaces
STEPS=${STEPS:-200}
for spec in "sketch|a pencil sketch of a face" "popart|a pop art painting of a face" "zombie|a zombie face" \
            "watercolor|a watercolor painting of a face"; do
  name=${spec%%|*}
  target=${spec#*|}
  $R adapt --model $M --source "a photo of a face" --target "$target" --steps "$STEPS" --num-tokens 1 --seed 0 --out "$M/domains/$name"
done
