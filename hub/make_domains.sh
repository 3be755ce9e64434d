#!/usr/bin/env bash
# The shipped domains of hub/refinestyle-synthfaces, each made from a text prompt only by one command.
# Run after `python hub/build_synthfaces.py assemble`; then `python hub/build_synthfaces.py card --recompute`.
# Stored with K = 1 token per convolution and 3 per toRGB layer (a toRGB residual [3, I] has rank <= 3, so 3 tokens
# re-colour freely for 0.5% of the generator): the file stays under 2% of the generator. The first 40% of the steps
# optimise 8 tokens on every layer (quick to find the style), then each layer is truncated (SVD) to its final K and
# optimised further, the learning rate decaying once over all the steps (the default --lr-schedule cosine); a global
# CLIP term (weight 0.5) keeps the images in the target class; the peak learning rate follows the steps (no --lr:
# 0.75 / steps within [0.005, 0.01]). With this recipe a 150-step (60 s) sketch run reaches the style class for
# every seed measured; K = 1 alone does not (bench/adaptation.py, bench/adaptation_sweep.py, README).
set -euo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/refinestyle
M=hub/refinestyle-synthfaces
# MODEL: where the generator and CLIPs load from (default: the hub folder); a copy of it without the encoders lets
# the domains be re-made for a new generator while its encoders are still being retrained.
MODEL=${MODEL:-$M}
STEPS=${STEPS:-200}
for spec in "sketch|a pencil sketch of a face" "popart|a pop art painting of a face" "zombie|a zombie face" \
            "watercolor|a watercolor painting of a face" "pixelart|a pixel art image of a face"; do
  name=${spec%%|*}
  target=${spec#*|}
  $R adapt --model "$MODEL" --source "a photo of a face" --target "$target" --steps "$STEPS" --num-tokens 1 --torgb-tokens 3 \
    --warmup-tokens 8 --warmup-steps $((STEPS * 2 / 5)) --global-weight 0.5 --seed 0 --out "$M/domains/$name"
done
