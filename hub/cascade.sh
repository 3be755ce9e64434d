#!/usr/bin/env bash
# Redo everything that is made on the generator after the generator changes: the encoders (one run of each kind, from
# the shipped ones), the domains, the inversion bench, the model card and the adaptation bench. Two processes at a time, one
# thread each (sized for two cores); about 75 minutes for the training, then the benches.
#
# Before: train the new generator and list its run last in GENERATOR_FINE_TUNES (hub/build_synthfaces.py).
# After: point ENCODER_RUNS there at the new encoder runs, add the new commands to RECIPE there (the card prints it),
# read the benches; one more two-stage run from this one (--init-from runs/$TAG-enc-two-stage/export, the next seed)
# often gains more.
#
#     TAG=s11 SEED=11 bash hub/cascade.sh             # run folders runs/$TAG-*, encoder batches from --seed $SEED
#     TAG=s11 SEED=11 DRY_RUN=1 bash hub/cascade.sh   # print the commands only
#     TAG=s11 SEED=11 ADAPTATION_BENCH=0 bash hub/cascade.sh   # stop after the card (the adaptation bench: ~45 min)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:?set TAG, the prefix of the run folders of this cascade, e.g. TAG=s12}
SEED=${SEED:?set SEED, the seed of the encoder runs: one more than the last in RECIPE (hub/build_synthfaces.py)}
PY=${PY:-.venv/bin/python}
M=hub/refinestyle-synthfaces
ONE_STAGE=hub/refinestyle-synthfaces-one-stage  # the one-stage encoder, shipped beside the model for comparison
PREV=runs/$TAG-prev    # the encoders shipped before this cascade: where it starts
ENC=($PY -m refinestyle.train.encoder --generator $M --threads 1)
JITTER=(--photometric-augment 0.5 --seed "$SEED")  # the token-branch runs: colour jitter, fresh batches

run() {  # run LOG COMMAND...: print it; unless DRY_RUN, run it with its output in LOG (one thread)
  echo "+ ${*:2}  > $1"
  [ -n "${DRY_RUN:-}" ] || OMP_NUM_THREADS=1 "${@:2}" > "$1" 2>&1
}

run runs/$TAG-assemble-generator.log $PY hub/build_synthfaces.py assemble --parts generator
if [ -z "${DRY_RUN:-}" ]; then
  mkdir -p "$PREV" runs/$TAG-model
  cp -rT $M/encoder "$PREV"/encoder
  cp -rT $ONE_STAGE/encoder "$PREV"/one-stage
  # The hub folder without its encoders (they no longer fit the generator) for the domain commands.
  for part in generator clip clip-vit; do ln -sfn "../../$M/$part" "runs/$TAG-model/$part"; done
  $PY - "$M" "runs/$TAG-model" <<'EOF'
import json, sys
index = json.load(open(f"{sys.argv[1]}/model_index.json"))
index.pop("encoder", None)
index["domains"] = []
json.dump(index, open(f"{sys.argv[2]}/model_index.json", "w"), indent=2)
EOF
fi

{  # core one: stage one (from the shipped two-stage encoder's W+ part), then the two-stage encoder on it
  run runs/$TAG-enc-stage-one.log "${ENC[@]}" --mode stage-one --out runs/$TAG-enc-stage-one --init-from "$PREV/encoder" \
    --steps 1500 --minutes 12 --export runs/$TAG-enc-stage-one/export
  run runs/$TAG-enc-two-stage.log "${ENC[@]}" "${JITTER[@]}" --mode two-stage --out runs/$TAG-enc-two-stage \
    --stage-one runs/$TAG-enc-stage-one/export --init-from "$PREV/encoder" --steps 2400 --minutes 27 \
    --export runs/$TAG-enc-two-stage/export
} &
core_one=$!
{  # core two: the domains, then the one-stage encoder
  run runs/$TAG-domains.log env MODEL=runs/$TAG-model bash hub/make_domains.sh
  run runs/$TAG-enc-one-stage.log "${ENC[@]}" "${JITTER[@]}" --mode one-stage --out runs/$TAG-enc-one-stage --init-from "$PREV/one-stage" \
    --steps 1500 --minutes 25 --export runs/$TAG-enc-one-stage/export
} &
core_two=$!
wait $core_one  # a failed step stops the cascade (errexit), here as in the steps themselves
wait $core_two

run runs/$TAG-assemble-encoders.log $PY hub/build_synthfaces.py assemble --parts encoders \
  --encoder-runs $TAG-enc-one-stage $TAG-enc-two-stage
mkdir -p bench/out
run bench/out/inversion-$TAG.txt $PY bench/inversion.py  # before the card: it reads bench/out/inversion.json
run runs/$TAG-card.log $PY hub/build_synthfaces.py card --recompute
if [ "${ADAPTATION_BENCH:-1}" != 0 ]; then
  run bench/out/adaptation-$TAG.txt $PY bench/adaptation.py --strengths 0.25 0.5 0.75
fi
