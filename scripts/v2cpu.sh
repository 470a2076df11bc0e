#!/usr/bin/env bash
# Issue 11 CPU comparison at equal steps (this 2-core machine does ~10 s/step): mt-lora 100 steps (its step-50
# checkpoint kept), the residual design 50 steps over mt-lora@50 (50 + 50), p2p with standardized input 100 steps.
# Each run stops with --until on its config's full schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
T=".venv/bin/python -m hypernet_onnx.train --config hypernet_onnx/configs"
$T/v2cpu-mt.toml --until 50
cp runs/v2cpu-mt/ckpt.pt runs/v2cpu-mt/step50.pt
$T/v2cpu-mt.toml --until 100
$T/v2cpu-residual.toml --until 50
$T/v2cpu-p2p-std.toml --until 100
