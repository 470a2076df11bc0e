"""Time one training step (forward + backward into LoRA weights, batch of real examples) with the logits at
every position (the former frozen_base.next_token_logits) and at the answer positions only (the current one).

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/bench_answer_logits.py --threads 2
"""
import argparse
import json
import time

import numpy as np
import torch

from hypernet_onnx import data as D
from hypernet_onnx.frozen_base import answer_nll, collate, encode, load_base, next_token_logits
from hypernet_onnx.model import attach_lora, set_lora
from hypernet_onnx.train import REPO, TrainConfig


def full_logits(model, input_ids, mask, loss_mask):
    logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
    return logits, input_ids[:, 1:], loss_mask[:, 1:]


ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--steps", type=int, default=12)
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()
torch.set_num_threads(args.threads)
cfg = TrainConfig.load(REPO / "hypernet_onnx/configs/small.toml")
model, tok, template, spec = load_base(cfg)
users = D.load_users(REPO.parent / "shared/data/mlpapers-dev.jsonl.gz", 40)
exs = D.loo_examples(users)                      # what training sees: both tasks, interleaved
rng = np.random.default_rng(0)
batches = [[encode(tok, template, exs[i], cfg.max_len) for i in rng.choice(len(exs), args.batch, replace=False)]
           for _ in range(args.steps)]
wrappers = attach_lora(model, tuple(cfg.modules))
g = torch.Generator().manual_seed(0)
lora = {m: (torch.randn(args.batch, spec.n_layer, cfg.rank, spec.n_embd, generator=g).mul_(0.01).requires_grad_(),
            torch.randn(args.batch, spec.n_layer, spec.module_shape(m)[0], cfg.rank, generator=g).mul_(0.01)
            .requires_grad_()) for m in cfg.modules}
out = {}
for name, fn in [("full", full_logits), ("answer", next_token_logits)] * 3:
    times, losses = [], []
    for items in batches:
        t = time.perf_counter()
        set_lora(wrappers, lora, 2.0)
        loss = answer_nll(*fn(model, *collate(items, tok.pad_token_id or 0))).mean()
        loss.backward()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    out.setdefault(name, []).append({"s_per_step_median": float(np.median(times[1:])), "loss_sum": sum(losses)})
    print(name, out[name][-1], flush=True)
print(json.dumps(out))
