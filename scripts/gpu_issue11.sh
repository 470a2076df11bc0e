#!/usr/bin/env bash
# Issue 11 on the lent GPU (../shared/gpu/README.md): five designs side by side on one GPU, same data and schedule.
# The base GGUF does not fit in one call (64 MiB with the tree). Since v4 (max_len 1024 caches) everything travels
# in pieces: here `bash scripts/gpu_issue11.sh pack` after --prepare of the runs' configs, then
#   run: `bash scripts/gpu_issue11.sh stage N` carry runs/gpuN for each piece N it made, then
#   run: `PREFIX=v4gpu RUNS="..." bash scripts/gpu_issue11.sh train` (no carry).
# Before v4 (and still for `ceiling`) the GGUF travelled in three parts:
#   run: bash scripts/gpu_issue11.sh part1   carry runs/gpu1                 (first 46 MB)
#   run: bash scripts/gpu_issue11.sh part2   carry runs/gpu2                 (next 46 MB)
#   run: bash scripts/gpu_issue11.sh train   carry runs/gpu3                 (the rest, data, caches, wheels)
#   (session 10's runs: PREFIX=v3gpu RUNS="res-kl1 mt-kl1 res res-kl3 res-kl1-lr5" bash scripts/gpu_issue11.sh train)
#   (v4, prepared 2026-11-27: PREFIX=v4gpu RUNS="res-kl1-rag50 res-kl1-ml1024" (distill1 third, if three fit);
#    their --prepare also writes the retrieved items, cache/rag-*.json, and the few-shot token ids)
#   (an adapter per request, prepared 2026-11-28: --prepare v3gpu-res-kl1-req, v3gpu-res-kl1 and v3gpu-mt-kl1, pack,
#    then PREFIX=v3gpu RUNS="res-kl1-req res-kl1 mt-kl1"; its --prepare writes cache/requests-*.npz, the vectors of
#    the items retrieved for every request, so the GPU machine needs no retrieval)
# runs/gpu3 holds: part, data/ (the first 1000 training authors, dev, PEPs, extra-train), cache/ (profile vectors
# and token ids from `python -m hypernet_onnx.train --prepare`: no embedder there), whl/ (gguf, platformdirs...).
# Back in $OUT: each run's best checkpoint (slim, fp16), its per-example dev NLLs (N-dev.npz: Trainer.dump_best)
# and logs.tgz (logs, ood.json).
#   (session 25, H200: --prepare v6gpu-res-kl1-req, v6gpu-res-kl1, v6gpu-mt-kl1, pack, stage 1..3, then
#    `bash scripts/gpu_issue11.sh stage 4 && PREFIX=v6gpu RUNS="res-kl1-req res-kl1 mt-kl1" bash scripts/gpu_issue11.sh train`)
#   run: bash scripts/gpu_issue11.sh ceiling carry runs/gpu4   (after part1, part2: the per-author ceiling)
# runs/gpu4 holds: part (= runs/gpu3/part), data/mlpapers-dev.jsonl.gz, whl/, mt-hyper-best.pt (the shared LoRA).
# Back in $OUT: one JSON per ceiling variant (hypernet_onnx/ceiling.py).
set -uo pipefail
STAGE=${STAGE:-/root/stage}
RUNS=${RUNS:-"mt-hyper mt-plain res res-extra res-contrast"}
PREFIX=${PREFIX:-v2gpu}      # configs hypernet_onnx/configs/$PREFIX-$run.toml
assemble() {   # the base GGUF from the staged parts and $1/part, the wheels the GPU machine lacks
  G=models/SmolLM2-135M-Instruct.Q4_1.gguf
  mkdir -p models runs/cache
  [ -f "$G" ] || cat "$STAGE/part1" "$STAGE/part2" "$1/part" > "$G"
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $G" | sha256sum -c - || exit 2
  pip install -q --no-index --no-deps --target /tmp/site "$1"/whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  nvidia-smi -L 2>/dev/null; python -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
}
case "${1:-}" in
  pack)   # here, after `python -m hypernet_onnx.train --config ... --prepare` for every run: the base GGUF, data,
          # caches and wheels in one tar, cut into pieces that fit a call (64 MiB with the ~19 MB tree): runs/gpuN/part
    set -e
    D=${DATA:-../shared/data}; B=runs/gpu-bundle
    rm -rf "$B" runs/gpu[0-9]* && mkdir -p "$B/data" "$B/cache" "$B/whl" "$B/models"
    cp models/SmolLM2-135M-Instruct.Q4_1.gguf "$B/models/"
    python - "$D" "$B/data" <<'PY'   # the first 1,000 training authors (every v2-v4 config's train_users)
import gzip, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
with gzip.open(f"{src}/mlpapers-train.jsonl.gz", "rt") as f, gzip.open(f"{dst}/mlpapers-train.jsonl.gz", "wt") as g:
    for n, line in zip(range(1000), f):
        g.write(line)
for name in ("mlpapers-dev", "peps-ood-dev", "extra-train"):
    shutil.copy(f"{src}/{name}.jsonl.gz", dst)
PY
    cp runs/cache/*.npz "$B/cache/" && { cp runs/cache/rag-*.json "$B/cache/" 2>/dev/null || true; }
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_17_x86_64 -d "$B/whl" gguf==0.19.0 platformdirs==4.14.8
    tar cf - -C "$B" . | split -b 44000000 -d -a 1 - runs/gpu-piece-
    i=1; for f in runs/gpu-piece-*; do mkdir -p "runs/gpu$i"; mv "$f" "runs/gpu$i/part"; i=$((i + 1)); done
    rm -rf "$B"; ls -l runs/gpu[0-9]*/part ;;
  stage)  # once per piece N of `pack`, carrying runs/gpuN, before `train`
    mkdir -p "$STAGE" && cp "runs/gpu$2/part" "$STAGE/piece$2" && ls -l "$STAGE" ;;
  part1) mkdir -p "$STAGE" && cp runs/gpu1/part "$STAGE/part1" && ls -l "$STAGE" ;;
  part2) mkdir -p "$STAGE" && cp runs/gpu2/part "$STAGE/part2" && ls -l "$STAGE" ;;
  ceiling)
    assemble runs/gpu4
    # variant = modules:lr; every author's LoRA rank 8 over the mt-hyper LoRA, 8 epochs of their own items
    V=${VARIANTS:-"q_proj,v_proj:1e-3 q_proj,v_proj:3e-3 q_proj,v_proj:3e-4 q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj:1e-3 q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj:3e-4"}
    i=0
    for v in $V; do
      i=$((i + 1))
      timeout "${RUN_TIMEOUT:-540}" python -m hypernet_onnx.ceiling --config hypernet_onnx/configs/v2gpu-res.toml \
        --data-dir runs/gpu4/data --shared runs/gpu4/mt-hyper-best.pt --modules "${v%%:*}" --lr "${v##*:}" \
        --epochs "${EPOCHS:-8}" --threads 3 --max-seconds "${MAX_SECONDS:-420}" --out "$OUT/ceiling-$i.json" \
        > "runs/ceiling-$i.log" 2>&1 &
    done
    wait
    tail -n 3 runs/ceiling-*.log | cut -c1-400
    ls -l "$OUT" ;;
  train)
    if ls "$STAGE"/piece* > /dev/null 2>&1; then      # pieces of `pack`: unpack into runs/gpu3, the GGUF into models/
      mkdir -p runs/gpu3 models && cat $(ls "$STAGE"/piece* | sort -V) | tar xf - -C runs/gpu3 || exit 4
      mv runs/gpu3/models/*.gguf models/
    fi
    assemble runs/gpu3
    cp runs/gpu3/cache/*.npz runs/cache/ && cp runs/gpu3/cache/*.json runs/cache/ 2>/dev/null
    for n in $RUNS; do
      timeout "${RUN_TIMEOUT:-530}" python -m hypernet_onnx.train --config "hypernet_onnx/configs/$PREFIX-$n.toml" \
        --data-dir runs/gpu3/data --threads 3 --max-seconds "${MAX_SECONDS:-400}" --dump "$OUT/$n-dev.npz" ${EXTRA:-} \
        > "runs/$PREFIX-$n.log" 2>&1 &
    done
    wait
    for n in $RUNS; do
      tail -n 2 "runs/$PREFIX-$n.log"
      [ -f "runs/$PREFIX-$n/best.pt" ] && python -m hypernet_onnx.export --slim --ckpt "runs/$PREFIX-$n/best.pt" --out "$OUT/$n-best.pt"
    done
    tar czf "$OUT/logs.tgz" runs/$PREFIX-*.log $(ls runs/$PREFIX-*/ood.json 2>/dev/null)
    ls -l "$OUT" ;;
  *) echo "usage: $0 pack|stage N|part1|part2|train|ceiling" >&2; exit 1 ;;
esac
