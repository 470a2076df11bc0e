"""The profile-to-LoRA hypernetwork (Profile-to-PEFT / Text-to-LoRA style).

    profile vector (B, P) -> encoder -> z (B, H)
    for each target module m and layer l:
        h = MLP(z + layer_emb[l] + module_emb[m])            (B, L, H)
        A = head_A[m](h) -> (B, L, r, in)    B = head_B[m](h) -> (B, L, out, r)

One shared MLP, one small linear head per (module, A|B). The heads' weights
start at zero; A's bias starts like a LoRA A (uniform, +-1/sqrt(in)) and B's
bias at zero, so the first adapter is exactly dW = 0 and training starts from
the base model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn


@dataclass
class HyperConfig:
    input_dim: int = 384                 # profile vector width (see app.profile)
    pooling: str = "mean"
    hidden: int = 256
    n_layers: int = 30                   # base model blocks
    modules: tuple[str, ...] = ("q_proj", "v_proj")
    shapes: dict[str, tuple[int, int]] = field(default_factory=lambda: {"q_proj": (576, 576), "v_proj": (192, 576)})
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modules"] = list(self.modules)
        d["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HyperConfig":
        d = dict(d)
        d["modules"] = tuple(d["modules"])
        d["shapes"] = {k: tuple(v) for k, v in d["shapes"].items()}
        return cls(**d)


class HyperNet(nn.Module):
    def __init__(self, cfg: HyperConfig):
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.encoder = nn.Sequential(nn.LayerNorm(cfg.input_dim), nn.Linear(cfg.input_dim, H), nn.GELU(),
                                     nn.Dropout(cfg.dropout), nn.Linear(H, H))
        self.layer_emb = nn.Parameter(torch.randn(cfg.n_layers, H) * 0.02)
        self.module_emb = nn.Parameter(torch.randn(len(cfg.modules), H) * 0.02)
        self.mlp = nn.Sequential(nn.LayerNorm(H), nn.Linear(H, H), nn.GELU(), nn.Linear(H, H), nn.LayerNorm(H))
        self.head_a = nn.ModuleDict()
        self.head_b = nn.ModuleDict()
        for m in cfg.modules:
            out_f, in_f = cfg.shapes[m]
            self.head_a[m] = nn.Linear(H, cfg.rank * in_f)
            self.head_b[m] = nn.Linear(H, out_f * cfg.rank)
            nn.init.zeros_(self.head_a[m].weight)
            nn.init.zeros_(self.head_b[m].weight)
            bound = 1.0 / math.sqrt(in_f)
            nn.init.uniform_(self.head_a[m].bias, -bound, bound)
            nn.init.zeros_(self.head_b[m].bias)

    @property
    def scale(self) -> float:
        return self.cfg.alpha / self.cfg.rank

    def forward(self, profile: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """profile (B, P) -> {module: (A (B, L, r, in), B (B, L, out, r))}."""
        cfg = self.cfg
        z = self.encoder(profile)                                                # (B, H)
        out = {}
        for i, m in enumerate(cfg.modules):
            h = z[:, None, :] + self.layer_emb[None] + self.module_emb[i]        # (B, L, H)
            h = self.mlp(h)                                                      # (B, L, H)
            out_f, in_f = cfg.shapes[m]
            a = self.head_a[m](h).view(-1, cfg.n_layers, cfg.rank, in_f)         # (B, L, r, in)
            b = self.head_b[m](h).view(-1, cfg.n_layers, out_f, cfg.rank)        # (B, L, out, r)
            out[m] = (a, b)
        return out


class BatchedLoRA(nn.Module):
    """Wraps a frozen nn.Linear; adds scale * (x A^T) B^T with a different (A, B) per batch row.

    Equivalent to PEFT's LoRA with delta W = scale * B @ A (tests check it
    against PEFT's get_delta_weight).
    """

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.a: torch.Tensor | None = None      # (B, r, in)
        self.b: torch.Tensor | None = None      # (B, out, r)
        self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:                          # x (B, T, in)
        y = self.base(x)
        if self.a is None:
            return y
        xa = torch.einsum("bti,bri->btr", x, self.a.to(x.dtype))                 # (B, T, r)
        return y + self.scale * torch.einsum("btr,bor->bto", xa, self.b.to(x.dtype))


def attach_lora(model: nn.Module, modules: tuple[str, ...]) -> dict[tuple[int, str], BatchedLoRA]:
    """Replace each target projection of each decoder layer by a BatchedLoRA wrapper."""
    wrappers = {}
    for l, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        for m in modules:
            w = BatchedLoRA(getattr(attn, m))
            setattr(attn, m, w)
            wrappers[(l, m)] = w
    return wrappers


def set_lora(wrappers: dict[tuple[int, str], BatchedLoRA], weights: dict[str, tuple[torch.Tensor, torch.Tensor]] | None,
             scale: float = 1.0) -> None:
    for (l, m), w in wrappers.items():
        if weights is None:
            w.a = w.b = None
        else:
            a, b = weights[m]
            w.a, w.b, w.scale = a[:, l], b[:, l], scale


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
