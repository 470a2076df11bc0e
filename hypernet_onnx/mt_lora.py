"""Write the mt-lora baseline's single adapter (a profile_input="zeros" checkpoint) as a GGUF LoRA.

    python -m hypernet_onnx.mt_lora --ckpt runs/mt-lora/best.pt --out runs/mt-lora/mt-lora.gguf
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from app.base_model import read_base_spec
from app.lora_gguf import LoraAdapter, write_adapter
from app.models import default_base_model_path
from hypernet_onnx.export import load_checkpoint


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    hyper, st = load_checkpoint(a.ckpt)
    if st["train_config"].get("profile_input") != "zeros":
        raise SystemExit(f"{a.ckpt} is not an mt-lora checkpoint (profile_input must be 'zeros')")
    with torch.no_grad():
        out = hyper(torch.zeros(1, hyper.cfg.input_dim))
    weights = {(l, m): (a_[0, l].numpy(), b_[0, l].numpy()) for m, (a_, b_) in out.items()
               for l in range(hyper.cfg.n_layers)}
    adapter = LoraAdapter(weights, hyper.cfg.out_alpha, {"hypernet_id": f"mt-lora-s{st['step']}"})
    print(write_adapter(adapter, a.out, read_base_spec(default_base_model_path())))


if __name__ == "__main__":
    main()
