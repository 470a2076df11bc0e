"""Train the hypernetwork end to end through the frozen base model.

    python -m hypernet_onnx.train --config hypernet_onnx/configs/small.toml
    accelerate launch -m hypernet_onnx.train --config ...      # several processes / GPUs

The same command runs on CPU or a GPU (bf16 autocast there) through
``accelerate``; with several processes each takes its share of every batch.

The base model is the same GGUF users run, dequantized by transformers. Each
step: profile vectors -> hypernetwork -> per-example LoRA on the base ->
cross-entropy on the answer tokens only (mean per example, so short headlines
count as much as long abstracts). Checkpoints carry their config and resume
exactly (same example order, optimizer and RNG state).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from app.base_model import BaseSpec
from app.profile import input_dim
from hypernet_onnx import caches as C
from hypernet_onnx import chat_anchors
from hypernet_onnx import data as D
from hypernet_onnx.frozen_base import answer_nll, collate, encode, load_base, next_token_logits
from hypernet_onnx.stats import person_metric
from hypernet_onnx.model import HyperConfig, HyperNet, attach_lora, count_params, set_lora

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent


@dataclass
class TrainConfig:
    name: str = "small"
    out_dir: str = "runs/small"
    base_gguf: str = "models/SmolLM2-135M-Instruct.Q4_1.gguf"   # or "tiny-random" (tests)
    train_data: str = "mlpapers-train.jsonl.gz"
    dev_data: str = "mlpapers-dev.jsonl.gz"
    train_users: int = 1000
    dev_users: int = 24
    pooling: str = "mean"
    hidden: int = 256
    rank: int = 8
    alpha: float = 16.0
    modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    batch_size: int = 4
    max_len: int = 320
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 30
    steps: int = 1000
    eval_every: int = 100
    seed: int = 0
    threads: int = 0
    profile_input: str = "profile"   # "zeros": no personalization -> one LoRA for all users (the mt-lora baseline)
    init_from: str = ""              # warm start: hypernetwork weights of another run's checkpoint (same model config)
    contrast: float = 0.0            # weight of the hinge "own profile beats another user's by `margin` nats"
    margin: float = 0.05
    standardize: bool = False        # z-score profile vectors with the training authors' mean/std
    shared_from: str = ""            # an mt-lora checkpoint: emit a residual over its LoRA (model.py, issue 11)
    shared_frozen: bool = True       # with shared_from: keep its LoRA fixed (False: train it on at shared_lr)
    shared_rank: int = 0             # > 0 (without shared_from): a plain shared LoRA of this rank, trained jointly
    shared_lr: float = 0.0           # peak lr of the shared LoRA's parameters (0: lr)
    loo: bool = False                # add leave-one-out examples (every profile item, the rest as its profile)
    rag_share: float = 0.0           # share of the loo examples shown after the author's retrieved items (rag_data)
    rag_distill: float = 0.0         # weight of KL(adapter shown the retrieved items || adapter) on bare loo examples
    request_profiles: bool = False   # each example's profile = the items the app retrieves for its request (caches)
    extra_data: str = ""             # more training authors from another file (e.g. extra-train.jsonl.gz)
    extra_users: int = 0
    ood_data: str = ""               # evaluated with the best checkpoint at the end (e.g. peps-ood-dev.jsonl.gz)
    ood_users: int = 0
    bf16: bool = True                # autocast on a GPU (CPU runs stay fp32)
    chat_users: int = 4              # chat drift in the dev log: the first N dev users' adapters on the chat anchors
    chat_kl: float = 0.0             # weight of KL(base || adapter) on everyday chat (chat_data), the chat guard's fix
    chat_batch: int = 8              # everyday chat answers per step, each under one of the batch's adapters
    chat_data: str = "hypernet_onnx/chat-train.jsonl"   # prompts + base answers, held apart from the anchors

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        with open(path, "rb") as f:
            return cls(**tomllib.load(f))


# --- the hypernetwork for this base model -------------------------------------
def hyper_config(cfg: TrainConfig, spec: BaseSpec, shared_rank: int = 0) -> HyperConfig:
    return HyperConfig(input_dim=input_dim(cfg.pooling), pooling=cfg.pooling, hidden=cfg.hidden,
                       n_layers=spec.n_layer, modules=tuple(cfg.modules),
                       shapes={m: spec.module_shape(m) for m in cfg.modules}, rank=cfg.rank, alpha=cfg.alpha,
                       standardize=cfg.standardize, shared_rank=shared_rank)


def shared_lora(path: Path, cfg: TrainConfig, spec: BaseSpec) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The one LoRA of an mt-lora run ({module: (A (L, r, in), B (L, out, r))}), checked to fit this run: trained
    with the profile zeroed, on this base model, for these modules, at this LoRA scale (alpha / rank)."""
    if not path.is_file():
        raise SystemExit(f"shared_from: no checkpoint at {path}")
    st = torch.load(path, map_location="cpu", weights_only=False)
    if st["train_config"].get("profile_input") != "zeros":
        raise SystemExit(f"shared_from: {path} is not an mt-lora run (profile_input must be 'zeros')")
    if st["base_fingerprint"] != spec.fingerprint():
        raise SystemExit(f"shared_from: {path} was trained on another base model")
    hc = HyperConfig.from_dict(st["hyper_config"])
    if list(hc.modules) != list(cfg.modules) or hc.alpha / hc.rank != cfg.alpha / cfg.rank:
        raise SystemExit(f"shared_from: {path} adapts {list(hc.modules)} at scale {hc.alpha / hc.rank}; this run "
                         f"adapts {cfg.modules} at scale {cfg.alpha / cfg.rank}")
    mt = HyperNet(hc)
    mt.load_state_dict(st["hyper"])                   # strict
    with torch.no_grad():
        out = mt.eval()(torch.zeros(1, hc.input_dim))
    return {m: (a[0], b[0]) for m, (a, b) in out.items()}


class Trainer:
    def __init__(self, cfg: TrainConfig, data_dir: Path = D.DATA_DIR):
        from accelerate import Accelerator
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        cuda = torch.cuda.is_available()
        self.acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda and cfg.bf16 else "no")
        self.main = self.acc.is_main_process
        self.out = REPO / cfg.out_dir if not Path(cfg.out_dir).is_absolute() else Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.tok, self.template, self.spec = load_base(cfg)
        shared = shared_lora(REPO / cfg.shared_from, cfg, self.spec) if cfg.shared_from else None
        shared_rank = shared[cfg.modules[0]][0].shape[1] if shared else cfg.shared_rank
        self.hcfg = hyper_config(cfg, self.spec, shared_rank=shared_rank)
        self.hyper = HyperNet(self.hcfg)
        if shared:
            self.hyper.set_shared(shared, frozen=cfg.shared_frozen)
        self.wrappers = attach_lora(self.model, tuple(cfg.modules))

        data = C.prepare(cfg, data_dir, self.spec.tokenizer_sha, self.template, self._encode, save=self.main)
        self.data_hash, self.profiles, self.tokens, self.splits = data.data_hash, data.profiles, data.tokens, data.splits
        self.train, self.train_ids, self.train_items = data.train, data.train_ids, data.train_items
        self.teacher_items = data.teacher_items
        self.dev = self.splits["dev"].examples
        self.chat_items = [chat_anchors.encode(self.tok, self.template, a, cfg.max_len)
                           for a in chat_anchors.load()] if cfg.chat_users else []
        self.chat_base: np.ndarray | None = None
        if cfg.standardize:
            vecs = torch.tensor(np.stack([self.profiles[u["user"]] for u in data.train_users]))       # (N, P)
            self.hyper.set_input_stats(vecs.mean(0), vecs.std(0))
        self.order = np.random.default_rng(cfg.seed).permutation(len(self.train))

        self.device = self.acc.device
        self.model.to(self.device)
        self.hyper.to(self.device)
        self.kl_items, self.kl_base = self._chat_targets() if cfg.chat_kl > 0 else ([], [])
        self.kl_seen: list[float] = []          # the chat KL of each step (this process's rows), for the log
        self.distill_seen: list[float] = []     # the rag_distill KL of each step, for the log
        shared_ids = {id(p) for p in self.hyper.shared_parameters()}
        groups = [{"params": [p for p in self.hyper.parameters() if id(p) not in shared_ids], "lr_mult": 1.0}]
        if self.hyper.shared_parameters() and not (shared and cfg.shared_frozen):
            groups.append({"params": self.hyper.shared_parameters(), "lr_mult": (cfg.shared_lr or cfg.lr) / cfg.lr})
        groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.hyper_ddp, self.opt = self.acc.prepare(self.hyper, opt)    # DDP wrapper with several processes
        self.step = 0
        self.best = math.inf
        self.log: list[dict] = []
        if not self._resume() and cfg.init_from:
            self._init_from(REPO / cfg.init_from)       # an absolute path stays as it is
        self.say(f"hypernet {count_params(self.hyper) / 1e6:.2f}M params; {len(self.train)} train / "
                 f"{len(self.dev)} dev examples; {self.acc.num_processes} process(es) on {self.device}; "
                 f"starting at step {self.step}")

    def say(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)

    def _encode(self, ex: D.Example) -> tuple[list[int], int]:
        return encode(self.tok, self.template, ex, self.cfg.max_len)

    # checkpoints carry their own config
    def _state(self) -> dict:
        return {"train_config": asdict(self.cfg), "hyper_config": self.hcfg.to_dict(), "step": self.step,
                "hyper": self.hyper.state_dict(), "opt": self.opt.state_dict(), "best": self.best, "log": self.log,
                "data_hash": self.data_hash, "base_fingerprint": self.spec.fingerprint(),
                "torch_rng": torch.get_rng_state()}

    def save(self, name: str) -> Path:
        path = self.out / name
        if self.main:
            torch.save(self._state(), path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
        self.acc.wait_for_everyone()
        return path

    def _load_same_model(self, path: Path, what: str) -> dict:
        """A checkpoint, refused (never loaded partially) if it holds another model shape."""
        st = torch.load(path, map_location="cpu", weights_only=False)
        if HyperConfig.from_dict(st["hyper_config"]) != self.hcfg:      # (older checkpoints lack newer fields)
            raise SystemExit(f"{what}: {path} was trained with another model config ({st['hyper_config']})")
        return st

    def _resume(self) -> bool:
        path = self.out / "ckpt.pt"
        if not path.is_file():
            return False
        st = self._load_same_model(path, "resume: use a new out_dir")
        self.hyper.load_state_dict(st["hyper"])           # strict: a mismatch is an error, never ignored
        self.opt.load_state_dict(st["opt"])
        self.step, self.best, self.log = st["step"], st["best"], st["log"]
        torch.set_rng_state(st["torch_rng"])
        return True

    def _init_from(self, path: Path) -> None:
        """Start from another run's weights (e.g. more users after a smaller run); optimizer and schedule start
        fresh. Only the weights are taken, and only from a checkpoint of the same model on the same base."""
        if not path.is_file():
            raise SystemExit(f"init_from: no checkpoint at {path}")
        st = self._load_same_model(path, "init_from")
        if st["base_fingerprint"] != self.spec.fingerprint():
            raise SystemExit(f"init_from: {path} was trained on another base model")
        self.hyper.load_state_dict(st["hyper"])           # strict
        print(f"initialised from {path} (step {st['step']}, best dev {st['best']:.4f})", flush=True)

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        p = (step - c.warmup) / max(1, c.steps - c.warmup)
        return c.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))

    def losses(self, batch: list[D.Example], profile_of=None, items: list[tuple[list[int], int]] | None = None
               ) -> torch.Tensor:
        """Per-example answer NLL (B,), each example under the adapter of its own profile (``ex.profile_key``:
        the user's, with ``loo`` the profile without the target item, with ``request_profiles`` the items retrieved
        for its request) or of ``profile_of(example)``."""
        items = items if items is not None else self.tokens.get(batch, self._encode)
        keys = [ex.profile_key if profile_of is None else profile_of(ex) for ex in batch]
        return self.nll_under(keys, items)

    def nll_under(self, keys: list[str] | None, items: list[tuple[list[int], int]]) -> torch.Tensor:
        """Per-sequence answer NLL (B,), row i under the adapter of profile ``keys[i]`` (None: the base model)."""
        return answer_nll(*self.logits_under(keys, items)).float()

    def logits_under(self, keys: list[str] | None, items: list[tuple[list[int], int]]):
        """next_token_logits of the batch, row i under the adapter of profile ``keys[i]`` (None: the base)."""
        dev = self.device
        input_ids, mask, loss_mask = (t.to(dev) for t in collate(items, self.tok.pad_token_id or 0))
        with self.acc.autocast():
            if keys is None:
                set_lora(self.wrappers, None)
            else:
                prof = torch.tensor(np.stack([self.profiles[k] for k in keys])).to(dev)         # (B, P)
                if self.cfg.profile_input == "zeros":
                    prof = torch.zeros_like(prof)
                net = self.hyper_ddp if self.hyper.training else self.hyper
                set_lora(self.wrappers, net(prof), self.hyper.scale)
            return next_token_logits(self.model, input_ids, mask, loss_mask)

    @torch.no_grad()
    def _chat_targets(self) -> tuple[list[tuple[list[int], int]], list[torch.Tensor]]:
        """Everyday chat answers (chat_data) and the base model's next-token log-probabilities on their answer
        tokens ((n, V) each, bf16 on the device: computed once, the base never changes)."""
        path = Path(self.cfg.chat_data)
        rows = chat_anchors.load(path if path.is_absolute() else REPO / path)
        held = {a["prompt"] for a in chat_anchors.load()}
        if any(r["prompt"] in held for r in rows):
            raise SystemExit(f"{path} holds chat anchors: they measure the drift and may not be trained on")
        items = [chat_anchors.encode(self.tok, self.template, r, self.cfg.max_len) for r in rows]
        items = [(ids, n) for ids, n in items if len(ids) > n]        # an answer cut away entirely by max_len
        base = []
        for i in range(0, len(items), self.cfg.batch_size):
            logits, _, lm = self.logits_under(None, items[i:i + self.cfg.batch_size])
            base += [F.log_softmax(x[m > 0].float(), -1).to(torch.bfloat16) for x, m in zip(logits, lm)]
        return items, base

    def chat_kl(self, logits: torch.Tensor, lm: torch.Tensor, idx: list[int]) -> torch.Tensor:
        """Mean over rows of KL(base || adapter) per answer token on everyday chat answers ``idx``: what keeps
        an adapter from pulling every answer toward its tasks (the anchors' drift was +0.3 nats without it)."""
        kls = []
        for x, m, j in zip(logits, lm, idx):
            q = F.log_softmax(x[m > 0].float(), -1)                                         # (n, V)
            kls.append(F.kl_div(q, self.kl_base[j].float(), log_target=True, reduction="none").sum(-1).mean())
        return torch.stack(kls).mean()

    def others(self, users: list[str]) -> dict[str, str]:
        """Another training user for each user, drawn afresh each step from a (seed, step) stream so a resumed
        run draws the same ones."""
        pool = self.train_ids
        rng = np.random.default_rng([self.cfg.seed, self.step])
        out = {}
        for u in users:
            while (v := pool[rng.integers(len(pool))]) == u:
                pass
            out[u] = v
        return out

    def step_loss(self, batch: list[D.Example], items: list[tuple[list[int], int]] | None = None,
                  teachers: list[tuple[list[int], int] | None] | None = None) -> torch.Tensor:
        """Answer NLL under the person's own adapter, plus the terms the config weights (each 0 by default):
        - ``chat_kl``: everyday chat answers ride in the same forward pass, under the first rows' adapters, and
          must keep the base model's distribution (the anchors' drift was +0.3 nats without it);
        - ``rag_distill``: rows with a teacher prompt (``teachers``: the same example after the author's retrieved
          items) learn toward their own adapter shown those items (context distillation), rag's gain carried
          into the adapter;
        - ``contrast``: a hinge that asks the own adapter to beat another person's on the same example by
          ``margin`` nats (the plain loss only teaches what helps everyone; the hinge rewards the difference)."""
        c = self.cfg
        items = items if items is not None else self.tokens.get(batch, self._encode)
        keys = [ex.profile_key for ex in batch]
        idx = []
        if c.chat_kl > 0:
            rng = np.random.default_rng([c.seed, self.step, 1])
            idx = list(rng.choice(len(self.kl_items), min(c.chat_batch, len(self.kl_items), len(batch)), replace=False))
        B = len(batch)
        logits, tgt, lm = self.logits_under(keys + keys[:len(idx)], items + [self.kl_items[j] for j in idx])
        own = answer_nll(logits[:B], tgt[:B], lm[:B]).float()                              # (B,)
        loss = own.mean()
        if idx:
            kl = self.chat_kl(logits[B:], lm[B:], idx)
            self.kl_seen.append(float(kl.detach()))
            loss = loss + c.chat_kl * kl
        rows = [i for i, t in enumerate(teachers or []) if t is not None] if c.rag_distill > 0 else []
        if rows:
            kl = self.rag_kl(keys, logits, tgt, lm, rows, [teachers[i] for i in rows])
            self.distill_seen.append(float(kl.detach()))
            loss = loss + c.rag_distill * kl
        if c.contrast <= 0:
            return loss
        other = self.others([ex.user for ex in batch])
        theirs = self.losses(batch, lambda e: other[e.user], items)                        # (B,)
        return loss + c.contrast * F.relu(c.margin + own - theirs).mean()

    def rag_kl(self, keys: list[str], logits, tgt, lm, rows: list[int],
               teacher_items: list[tuple[list[int], int]]) -> torch.Tensor:
        """Mean over ``rows`` of KL(teacher || adapter) per answer token: the teacher is the row's own adapter,
        without gradient, shown the author's retrieved items before the request (a longer prompt, the same answer
        tokens; where max_len cut one answer shorter, the common start), the student the adapter on the bare
        request. Not the base model shown the items: through llama.cpp that scores worse headlines than the
        shipped adapter alone (NLL 2.570 vs 2.409, MODEL_CARD "Where the person is"), while the adapter shown
        them beats both on both tasks (2.196 / 3.100), so the teacher stays ahead of its student."""
        with torch.no_grad():
            t_logits, t_tgt, t_lm = self.logits_under([keys[r] for r in rows], teacher_items)
        kls = []
        for r, x, y, m in zip(rows, t_logits, t_tgt, t_lm):
            s_pos = (lm[r] > 0).nonzero().squeeze(1)
            t_pos = (m > 0).nonzero().squeeze(1)
            n = min(len(s_pos), len(t_pos))
            if not torch.equal(tgt[r][s_pos[:n]], y[t_pos[:n]]):
                raise AssertionError("a teacher prompt predicts other answer tokens than its bare example")
            t = F.log_softmax(x[t_pos[:n]].float(), -1)                                   # (n, V)
            q = F.log_softmax(logits[r][s_pos[:n]].float(), -1)                           # (n, V)
            kls.append(F.kl_div(q, t, log_target=True, reduction="none").sum(-1).mean())
        return torch.stack(kls).mean()

    def train_step(self) -> float:
        """One step on the global batch of ``batch_size`` examples; each process takes its contiguous share."""
        c = self.cfg
        self.hyper.train()
        n, r = self.acc.num_processes, self.acc.process_index
        share = c.batch_size // n
        if share * n != c.batch_size:
            raise SystemExit(f"batch_size {c.batch_size} does not split over {n} processes")
        idx = [self.order[(self.step * c.batch_size + r * share + i) % len(self.order)] for i in range(share)]
        loss = self.step_loss([self.train[i] for i in idx], [self.train_items[i] for i in idx],
                              [self.teacher_items[i] for i in idx])
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("lr_mult", 1.0)
        self.opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        self.acc.clip_grad_norm_(self.hyper_ddp.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return self.acc.reduce(loss.detach(), "mean").item()

    @torch.no_grad()
    def evaluate(self, split: str = "dev") -> dict:
        """Dev NLL with the own profile, a shuffled (another dev user's) profile and the base model, and the
        person metric that decides between designs (issue 11): per task, shuffled - own with a paired bootstrap
        CI over users, and the person share = (shuffled - own) / (base - own), the part of the adapter's gain
        that needs the person's own profile. Every process computes it (the same numbers); only the main one
        prints and saves."""
        sp = self.splits[split]
        per_example = self.per_example(split)
        out = {name: float(v.mean()) for name, v in per_example.items()}
        out["person"] = person_metric(sp.examples, per_example)
        if self.chat_items:
            out.update(self.chat_drift(list(dict.fromkeys(e.user for e in sp.examples))[:self.cfg.chat_users]))
        return out

    @torch.no_grad()
    def per_example(self, split: str = "dev") -> dict[str, np.ndarray]:
        """(n,) answer NLL per example of ``split`` under the own profile ("dev"), the shuffled one
        ("dev_shuffled") and the base model ("dev_base")."""
        self.hyper.eval()
        sp = self.splits[split]
        n = len(sp.examples)
        per_example = {name: self._batched(n, lambda s: self.losses(sp.examples[s], profile_of, sp.items[s]))
                       for name, profile_of in [("dev", None), ("dev_shuffled", sp.shuffled_key)]}
        if sp.base is None:    # the frozen base model's loss never changes: compute it once
            sp.base = self._batched(n, lambda s: self.nll_under(None, sp.items[s]))
        per_example["dev_base"] = sp.base
        return per_example

    def dump_best(self, path: Path, split: str = "dev") -> None:
        """The best checkpoint's per-example NLLs on ``split`` (per_example, with each example's user and task)
        to an .npz, so two runs on the same examples (a design and its fair control) can be compared pairwise,
        with a bootstrap over users, after the machine that trained them is gone."""
        st = torch.load(self.out / "best.pt", map_location="cpu", weights_only=False)
        self.hyper.load_state_dict(st["hyper"])           # strict
        per = self.per_example(split)
        exs = self.splits[split].examples
        if self.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, step=st["step"], users=np.array([e.user for e in exs]),
                     tasks=np.array([e.task for e in exs]), **per)

    def chat_drift(self, users: list[str]) -> dict:
        """The chat guard of issue 11 (hypernet_onnx/chat_anchors.py): the base model's own answers to everyday
        prompts scored under these users' adapters, minus under none. The app's evaluation measures the same
        through llama.cpp at the app's strength; this is the cheap view in every dev log."""
        items = self.chat_items
        if self.chat_base is None:
            self.chat_base = self._batched(len(items), lambda s: self.nll_under(None, items[s]))
        own = np.mean([self._batched(len(items), lambda s: self.nll_under([u] * len(items[s]), items[s]))
                       for u in users], 0)                                               # (n,) averaged over users
        return {"chat": float(own.mean()), "chat_base": float(self.chat_base.mean()),
                "chat_drift": float(own.mean() - self.chat_base.mean())}

    def _batched(self, n: int, nll_of) -> np.ndarray:
        """(n,) per-row NLLs, ``nll_of(slice)`` run over 0..n in slices of the batch size."""
        bs = self.cfg.batch_size
        return torch.cat([nll_of(slice(i, i + bs)) for i in range(0, n, bs)]).cpu().numpy()

    def run(self, max_seconds: float | None = None, until: int | None = None) -> list[dict]:
        """Train to cfg.steps, or stop early (with a checkpoint) at step `until` or after `max_seconds`.

        Stopping at a step keeps the schedule of the full run, so two configs can be compared at equal steps
        without training either to the end; a later call resumes where this one stopped."""
        c = self.cfg
        t0 = time.time()
        running = []
        if self.step == 0 and not self.log:
            self.log.append({"step": 0, **self.evaluate(), "elapsed": 0.0})
            self.say(json.dumps(self.log[-1]))
        stop = min(c.steps, until) if until is not None else c.steps
        while self.step < stop:
            running.append(self.train_step())
            if self.step % 10 == 0:
                kl = {"chat_kl_10": float(np.mean(self.kl_seen[-10:]))} if self.kl_seen else {}
                if self.distill_seen:
                    kl["rag_kl_10"] = float(np.mean(self.distill_seen[-10:]))
                self.say(json.dumps({"step": self.step, "train_10": float(np.mean(running[-10:])), **kl,
                                     "elapsed": round(time.time() - t0, 1)}))
            if self.step % c.eval_every == 0 or self.step in (c.steps, stop):
                rec = {"step": self.step, "train": float(np.mean(running)), **self.evaluate(),
                       "lr": self.lr_at(self.step), "elapsed": time.time() - t0}
                running = []
                self.log.append(rec)
                self.say(json.dumps(rec))
                if rec["dev"] < self.best:
                    self.best = rec["dev"]
                    self.save("best.pt")
                self.save("ckpt.pt")
                if self.main:
                    plot_log(self.log, self.out / "loss.png")
            if max_seconds is not None and time.time() - t0 > max_seconds:
                self.save("ckpt.pt")
                break
        if "ood" in self.splits and self.step >= stop:
            self.evaluate_best("ood")
        return self.log

    def evaluate_best(self, split: str) -> dict:
        """The best dev checkpoint on another split (out-of-domain authors), written to ``{split}.json``."""
        st = torch.load(self.out / "best.pt", map_location="cpu", weights_only=False)
        self.hyper.load_state_dict(st["hyper"])           # strict
        rec = {"split": split, "step": st["step"], **self.evaluate(split)}
        self.say(json.dumps(rec))
        if self.main:
            (self.out / f"{split}.json").write_text(json.dumps(rec, indent=1))
        return rec


def plot_log(log: list[dict], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:          # a training machine without it (the lent GPU) still trains; the log has it all
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    tr = [r for r in log if "train" in r]
    ax.plot([r["step"] for r in tr], [r["train"] for r in tr], label="train (running mean)")
    for key in ("dev", "dev_shuffled", "dev_base"):
        ax.plot([r["step"] for r in log], [r[key] for r in log], marker="o", label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("answer NLL per token (mean per example)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--max-seconds", type=float, default=None, help="stop (with a checkpoint) after this long")
    ap.add_argument("--until", type=int, default=None, help="stop (with a checkpoint) at this step")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (overrides the config's)")
    ap.add_argument("--data-dir", type=Path, default=D.DATA_DIR, help="folder of the data files (default ../shared/data)")
    ap.add_argument("--dump", type=Path, default=None, help="after the run, the best checkpoint's per-example dev "
                    "NLLs (own, shuffled, base) as .npz: pairwise comparisons across runs (Trainer.dump_best)")
    ap.add_argument("--prepare", action="store_true",
                    help="only build the profile and token caches (runs/cache) that another machine trains from")
    a = ap.parse_args(argv)
    cfg = TrainConfig.load(a.config)
    if a.threads is not None:
        cfg = replace(cfg, threads=a.threads)    # a machine setting, not part of the model: not in the config
    tr = Trainer(cfg, a.data_dir)
    if not a.prepare:
        tr.run(a.max_seconds, a.until)
        if a.dump:
            tr.dump_best(a.dump)


if __name__ == "__main__":
    main()
