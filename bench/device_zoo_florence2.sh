#!/usr/bin/env bash
# Train the zoo's Florence-2 on a lent GPU (the library's `device` tool), training only: the GPU
# machine has torch and transformers but not the whole engine (no spaCy, Ray, Prefect), so it runs
# `fld zoo build --train-only`'s function and the measuring and publishing happen back here with
# the same command without --train-only (docs/FLORENCE2_RECIPE.md, "The zoo's Florence-2 on a GPU").
#
# What travels with the working tree (`python bench/device_zoo_prepare.py` makes it here; .whl/ and
# .device/ are git-ignored), named in the call's carry: [".whl", ".device"]
#   .whl/                transformers (this project's pin), pycocotools, dill, defusedxml wheels, cp312
#   .device/site/        pycocoevalcap's bleu, cider and rouge (its wheel is 100 MB of Java jars)
#   .device/zoo-build/   the zoo world's tables and seed images (null list cells as placeholders)
# Steps: STEPS when given; otherwise the speed of 40 timed steps sets how many fit MINUTES (default
# 6.5), rounded down to 100, at least MIN_STEPS and at most MAX_STEPS. The training runs under
# TRAIN_LIMIT seconds (default 540) so that what it saved still comes back before the call's limit.
# Back in $OUT: florence2-speed.json, train.log, and florence2.tgz.* (the checkpoint and trained.json
# of zoo-build/models/round-0/florence2, in 15 MB parts): `cat florence2.tgz.* | tar xz` here.
set -euo pipefail
MINUTES=${MINUTES:-6.5} DEVICE=${DEVICE:-cuda} PROBE_STEPS=${PROBE_STEPS:-40} MIN_STEPS=${MIN_STEPS:-500} MAX_STEPS=${MAX_STEPS:-15000} STEPS=${STEPS:-} TRAIN_LIMIT=${TRAIN_LIMIT:-540}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/.device/site:$PWD PYTHONUNBUFFERED=1
mkdir -p zoo-build && rm -rf zoo-build/world && cp -r .device/zoo-build/world zoo-build/world
nvidia-smi -L || true
if [ -z "$STEPS" ]; then
  python3 bench/florence2_speed.py --device "$DEVICE" --steps "$PROBE_STEPS" --minutes "$MINUTES" --out "$OUT/florence2-speed.json" 2>&1 | tail -8
  STEPS=$(python3 -c "import json, sys; fits = json.load(open(sys.argv[1]))['rows'][0]['fits']; print(min(max(fits, int(sys.argv[2])), int(sys.argv[3])))" "$OUT/florence2-speed.json" "$MIN_STEPS" "$MAX_STEPS")
fi
echo "training $STEPS steps"
timeout "$TRAIN_LIMIT" python3 -c "
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s')
from engine.loop.zoo import build
build(Path('zoo-build'), Path('zoo'), ('florence2',), sys.argv[2], steps=int(sys.argv[1]), train_only=True)
" "$STEPS" "$DEVICE" 2>&1 | grep -v -i warn | tee "$OUT/train.log" | tail -20 || echo "training stopped early (limit $TRAIN_LIMIT s): the checkpoint comes back to resume"
tar czf - zoo-build/models/round-0/florence2/checkpoint zoo-build/models/round-0/florence2/trained.json \
  | split -b 15M - "$OUT/florence2.tgz." || true
ls -la "$OUT"
