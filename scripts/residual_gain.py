"""Is the person under-expressed in a residual hypernetwork? Scale its residual (the part that is zero for the
average person) by gamma at inference and score own vs shuffled profiles (issue 11, torch, dev authors).

    python scripts/residual_gain.py --config hypernet_onnx/configs/v3gpu-res-kl1.toml --ckpt runs/s10/gpu/res-kl1-best.pt \
        --users 40 --gammas 0,1,2,3

gamma 0 is the shared LoRA alone (mt-lora of this run), 1 the adapter as trained.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx.train import TrainConfig, Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--gammas", default="0,1,2,3")
    ap.add_argument("--data-dir", type=Path, default=D.DATA_DIR)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    cfg = TrainConfig.load(a.config)
    cfg = dataclasses.replace(cfg, out_dir="runs/residual-gain", dev_users=a.users, ood_data="", chat_users=0,
                              chat_kl=0.0, threads=a.threads, bf16=False)
    tr = Trainer(cfg, a.data_dir)
    st = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    tr.hyper.load_state_dict({k: v.float() for k, v in st["hyper"].items()})    # strict
    if not tr.hcfg.shared_rank:
        raise SystemExit("not a residual hypernetwork (shared_rank = 0)")
    trained = {m: h.weight.detach().clone() for m, h in tr.hyper.head_b.items()}
    for g in [float(x) for x in a.gammas.split(",")]:
        with torch.no_grad():
            for m, h in tr.hyper.head_b.items():
                h.weight.copy_(trained[m] * g)           # B_res scales, so the residual dW scales by gamma
            r = tr.evaluate()
        print(json.dumps({"gamma": g, "dev": round(r["dev"], 4), "dev_shuffled": round(r["dev_shuffled"], 4),
                          "dev_base": round(r["dev_base"], 4), "person": r["person"]}), flush=True)


if __name__ == "__main__":
    main()
