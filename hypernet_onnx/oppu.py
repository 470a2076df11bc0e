"""OPPU baseline: one LoRA trained per user on their own profile (PEFT), exported like any adapter.

The user's profile items become training examples for both tasks (the same
prompts as evaluation). Same rank, alpha and target modules as the
hypernetwork, so the comparison is about how the weights are obtained.
"""
from __future__ import annotations

import numpy as np
import torch

from app.lora_gguf import LoraAdapter
from app.prompts import TASKS
from hypernet_onnx import data as D
from hypernet_onnx.frozen_base import collate, encode, example_losses, load_base
from hypernet_onnx.train import TrainConfig


class OPPUTrainer:
    def __init__(self, template: str, steps: int = 24, batch_size: int = 4, lr: float = 1e-3, rank: int = 8,
                 alpha: float = 16.0, modules=("q_proj", "v_proj"), max_len: int = 320, seed: int = 0):
        from peft import LoraConfig, get_peft_model
        cfg = TrainConfig()
        model, self.tok, _, self.spec = load_base(cfg)
        self.template = template
        self.model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                                                      target_modules=list(modules)))
        self.modules, self.rank, self.alpha = modules, rank, alpha
        self.steps, self.bs, self.lr, self.max_len, self.seed = steps, batch_size, lr, max_len, seed

    def _layers(self):
        return self.model.base_model.model.model.layers

    def train_user(self, user: dict) -> LoraAdapter:
        torch.manual_seed(self.seed)
        for layer in self._layers():                          # fresh LoRA: kaiming A, zero B (PEFT's init)
            for m in self.modules:
                getattr(layer.self_attn, m).reset_lora_parameters("default", True)
        params = [p for n, p in self.model.named_parameters() if "lora_" in n]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=self.lr)
        exs = [D.item_example(user["user"], t, it) for it in user["profile"] for t in TASKS]
        rng = np.random.default_rng(self.seed)
        self.model.train()
        for _ in range(self.steps):
            batch = [exs[i] for i in rng.choice(len(exs), size=min(self.bs, len(exs)), replace=False)]
            items = [encode(self.tok, self.template, ex, self.max_len) for ex in batch]
            loss = example_losses(self.model, *collate(items, self.tok.pad_token_id or 0)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.model.eval()
        weights = {}
        for l, layer in enumerate(self._layers()):
            for m in self.modules:
                proj = getattr(layer.self_attn, m)
                weights[(l, m)] = (proj.lora_A["default"].weight.detach().numpy().copy(),
                                   proj.lora_B["default"].weight.detach().numpy().copy())
        return LoraAdapter(weights=weights, alpha=self.alpha, metadata={"hypernet_id": f"oppu-{user['user']}"})
