#!/usr/bin/env bash
# The shipped domains of hub/refinestyle-synthfaces, each made from a text prompt only by one command.
# Run after `python hub/build_synthfaces.py assemble`; then `python hub/build_synthfaces.py card --recompute`.
# K = 1 token per convolution and 3 per toRGB layer (their residual [3, I] has rank <= 3, so 3 tokens let the
# domain re-colour freely for 0.5% of the generator): within 60 s sketch reaches the style class, which K = 1 alone
# does not (bench/adaptation.py), and the file stays under 2% of the generator.
set -euo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/refinestyle
M=hub/refinestyle-synthfaces
STEPS=${STEPS:-200}
for spec in "sketch|a pencil sketch of a face" "popart|a pop art painting of a face" "zombie|a zombie face" \
            "watercolor|a watercolor painting of a face"; do
  name=${spec%%|*}
  target=${spec#*|}
  $R adapt --model $M --source "a photo of a face" --target "$target" --steps "$STEPS" --num-tokens 1 --torgb-tokens 3 --seed 0 --out "$M/domains/$name"
done
