#!/usr/bin/env bash
# Issue 11 CPU comparison: mt-lora 200 steps (copy at 100), residual 100 over mt@100, p2p-std 200, p2p 200.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
T=".venv/bin/python -m hypernet_onnx.train --config hypernet_onnx/configs"
$T/v2cpu-mt.toml --until 100
cp runs/v2cpu-mt/ckpt.pt runs/v2cpu-mt/step100.pt
$T/v2cpu-mt.toml
$T/v2cpu-residual.toml
$T/v2cpu-p2p-std.toml
$T/v2cpu-p2p.toml
