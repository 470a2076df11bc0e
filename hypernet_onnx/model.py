"""The profile-to-LoRA hypernetwork (Profile-to-PEFT / Text-to-LoRA style).

    profile vector (B, P) -> encoder -> z (B, H)
    for each target module m and layer l:
        h = MLP(z + layer_emb[l] + module_emb[m])            (B, L, H)
        A = head_A[m](h) -> (B, L, r, in)    B = head_B[m](h) -> (B, L, out, r)

One shared MLP, one small linear head per (module, A|B). The heads' weights
start at zero; A's bias starts like a LoRA A (uniform, +-1/sqrt(in)) and B's
bias at zero, so the first adapter is exactly dW = 0 and training starts from
the base model.

Residual design (``shared_rank`` > 0, issue 11): trained plainly, the adapter
carried the tasks and the domain and almost nothing of the person, and one
shared LoRA (mt-lora) beat it. So a shared LoRA is part of every adapter (a
plain LoRA trained jointly, or an mt-lora run's, frozen), and the network emits
only a residual that is exactly zero for the average person:

    p  = (profile - mean) / std                       training authors' statistics (``standardize``)
    h  = MLP(enc(p) + emb) - MLP(enc(0) + emb)         h = 0 at the average profile (dropout after the difference)
    A  = [A_shared ; head_A(h)]   B = [B_shared , head_B(h)]   (heads without bias; B's starts at zero)

so dW = s (B_shared A_shared + B_res A_res): at the start, and for the average
person always, the adapter *is* the shared LoRA (p2p >= mt-lora by
construction), and whatever the profile adds is the person's.
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
    standardize: bool = False            # inputs z-scored with the training authors' mean/std (buffers)
    shared_rank: int = 0                 # > 0: residual over a frozen shared LoRA of this rank (buffers)

    @property
    def out_rank(self) -> int:
        """The rank of the emitted adapter: the shared part's and the residual's, side by side."""
        return self.shared_rank + self.rank

    @property
    def out_alpha(self) -> float:
        """The alpha to write beside the emitted rank-``out_rank`` adapter, so that llama.cpp's alpha / rank is
        the scale it was trained with (alpha / ``rank``)."""
        return self.alpha * self.out_rank / self.rank

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
        residual = cfg.shared_rank > 0
        for m in cfg.modules:
            out_f, in_f = cfg.shapes[m]
            self.head_a[m] = nn.Linear(H, cfg.rank * in_f, bias=not residual)
            self.head_b[m] = nn.Linear(H, out_f * cfg.rank, bias=not residual)
            nn.init.zeros_(self.head_b[m].weight)
            bound = 1.0 / math.sqrt(in_f)
            if residual:     # no bias: A must depend on h from the start, or B would get no gradient.
                # h has ~unit entries over H dims, so 1/sqrt(H) keeps A's entries at a LoRA A's size (+-bound);
                # at +-bound per weight, A came out ~sqrt(H) times too large and the first residual run
                # (v2cpu-residual-init1, model card) got worse than its start.
                nn.init.uniform_(self.head_a[m].weight, -bound / math.sqrt(H), bound / math.sqrt(H))
            else:
                nn.init.zeros_(self.head_a[m].weight)
                nn.init.uniform_(self.head_a[m].bias, -bound, bound)
                nn.init.zeros_(self.head_b[m].bias)
            if residual:     # a plain LoRA (A like PEFT's, B zero), trained jointly or set from an mt-lora run
                a0 = torch.empty(cfg.n_layers, cfg.shared_rank, in_f).uniform_(-bound, bound)
                setattr(self, f"shared_a_{m}", nn.Parameter(a0))
                setattr(self, f"shared_b_{m}", nn.Parameter(torch.zeros(cfg.n_layers, out_f, cfg.shared_rank)))
        if cfg.standardize:
            self.register_buffer("in_mean", torch.zeros(cfg.input_dim))
            self.register_buffer("in_std", torch.ones(cfg.input_dim))

    @property
    def scale(self) -> float:
        return self.cfg.alpha / self.cfg.rank

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.in_mean.copy_(mean)
        self.in_std.copy_(std.clamp(min=1e-6))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [getattr(self, f"shared_{x}_{m}") for m in self.cfg.modules for x in "ab"] if self.cfg.shared_rank else []

    @torch.no_grad()
    def set_shared(self, weights: dict[str, tuple[torch.Tensor, torch.Tensor]], frozen: bool = True) -> None:
        """Set the shared LoRA: {module: (A (L, r0, in), B (L, out, r0))}, trained with the same scale; frozen
        (an mt-lora run's, ``shared_from``) or trained on with the residual."""
        for m, (a, b) in weights.items():
            for x, t in (("a", a), ("b", b)):
                p = getattr(self, f"shared_{x}_{m}")
                p.copy_(t)
                p.requires_grad_(not frozen)

    def forward(self, profile: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """profile (B, P) -> {module: (A (B, L, R, in), B (B, L, out, R))}, R = cfg.out_rank."""
        cfg = self.cfg
        if cfg.standardize:
            profile = (profile - self.in_mean) / self.in_std
        residual = cfg.shared_rank > 0
        if residual:   # encoder without its dropout: two masks would make the residual nonzero for the average person
            enc = [layer for layer in self.encoder if not isinstance(layer, nn.Dropout)]
            z = nn.Sequential(*enc)(profile)                                     # (B, H)
            z0 = nn.Sequential(*enc)(torch.zeros_like(profile[:1]))              # (1, H) the average person
        else:
            z = self.encoder(profile)                                            # (B, H)
        out = {}
        for i, m in enumerate(cfg.modules):
            emb = self.layer_emb[None] + self.module_emb[i]                      # (1, L, H)
            h = self.mlp(z[:, None, :] + emb)                                    # (B, L, H)
            if residual:   # 0 for the average person; dropout here keeps it 0
                h = nn.functional.dropout(h - self.mlp(z0[:, None, :] + emb), cfg.dropout, self.training)
            out_f, in_f = cfg.shapes[m]
            a = self.head_a[m](h).view(-1, cfg.n_layers, cfg.rank, in_f)         # (B, L, r, in)
            b = self.head_b[m](h).view(-1, cfg.n_layers, out_f, cfg.rank)        # (B, L, out, r)
            if residual:
                n = a.shape[0]
                a = torch.cat([getattr(self, f"shared_a_{m}").expand(n, -1, -1, -1), a], 2)   # (B, L, R, in)
                b = torch.cat([getattr(self, f"shared_b_{m}").expand(n, -1, -1, -1), b], 3)   # (B, L, out, R)
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
    """Replace each target projection of each decoder layer (attention or MLP) by a BatchedLoRA wrapper."""
    wrappers = {}
    for l, layer in enumerate(model.model.layers):
        for m in modules:
            parent = layer.self_attn if hasattr(layer.self_attn, m) else layer.mlp    # q/k/v/o or gate/up/down
            w = BatchedLoRA(getattr(parent, m))
            setattr(parent, m, w)
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
