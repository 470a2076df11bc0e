"""How much of the person can an adapter carry at all? The per-author ceiling (issue 11).

    python -m hypernet_onnx.ceiling --config hypernet_onnx/configs/v2gpu-res.toml \
        --shared runs/v2gpu/mt-hyper-best.pt --modules q_proj,v_proj --lr 1e-3 --epochs 8 --out runs/ceiling/qv.json
    python -m hypernet_onnx.ceiling --report runs/ceiling/*.json     # epoch and variant chosen on half the authors

Issue 11 asks that an author's own adapter beat another author's by >= 0.10 nats. Before more hypernetwork designs
chase that, this measures what the documents allow: every dev author gets a LoRA trained on their own profile
items alone (both tasks, as OPPU trains one per user), on top of a frozen shared adapter (an mt-lora checkpoint's,
so task and domain are already there and the per-author part can only add the author), all authors at once with
one LoRA per author in the batch. Each epoch it scores the authors' queries -- the examples the training log's
dev metric uses -- with the author's own LoRA and with the next author's (the pairing of ``caches.make_split``):
other - own is the person gap a per-author weight update reaches from these documents, a yardstick for what a
hypernetwork (one forward pass from the same documents) can be asked for. Every LoRA gets the same training, so
what helps any author's queries (more task practice) cancels in the gap.

    python -m hypernet_onnx.ceiling --config hypernet_onnx/configs/v3gpu-res-kl1-req.toml --per-request \
        --users 30 --queries 1 --lr 5e-4 --epochs 5 --batch 8 --threads 2 --out runs/s19/request-ceiling.json

``--per-request`` asks the same of an adapter per request (the design of ``request_profiles``): every scored
request gets two LoRAs, one trained on the author's items the app retrieves for it (as "Cite my documents" picks
them), one on the next author's items retrieved for the same request (the shuffled twin the training log scores).
other - own is then what weights made from the request's nearest items can carry, next to what the same items do
shown in the prompt (``rag-own`` / ``rag-other``, scored once under the shared adapter): whether a hypernetwork
emitting per-request adapters could reach issue 11's 0.10 nats, before a GPU is spent on training one.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from app.prompts import TASKS, with_examples
from hypernet_onnx import caches as C
from hypernet_onnx import data as D
from hypernet_onnx import rag_data as R
from hypernet_onnx.frozen_base import collate, encode, example_losses, load_base
from hypernet_onnx.model import attach_lora, set_lora
from hypernet_onnx.stats import paired_bootstrap, person_metric
from hypernet_onnx.train import REPO, TrainConfig, shared_lora

Weights = dict[str, tuple[torch.Tensor, torch.Tensor]]


class PerAuthorLoRA(nn.Module):
    """One LoRA per author, {module: A (U, L, r, in), B (U, L, out, r)} (A like PEFT's, B zero), appended to a
    frozen shared LoRA as extra rank: dW = s (B_shared A_shared + B_u A_u), both at the same scale s."""

    def __init__(self, n_users: int, n_layers: int, shapes: dict[str, tuple[int, int]], rank: int):
        super().__init__()
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        for m, (out_f, in_f) in shapes.items():
            bound = 1.0 / math.sqrt(in_f)
            self.a[m] = nn.Parameter(torch.empty(n_users, n_layers, rank, in_f).uniform_(-bound, bound))
            self.b[m] = nn.Parameter(torch.zeros(n_users, n_layers, out_f, rank))

    def forward(self, idx: torch.Tensor | None, shared: Weights, n: int) -> Weights:
        """Adapters of a batch of n examples: row i is author idx[i]'s LoRA (idx None: the shared LoRA alone)."""
        out = {}
        for m in set(shared) | set(self.a):
            parts_a, parts_b = [], []
            if m in shared:
                parts_a.append(shared[m][0].expand(n, -1, -1, -1))
                parts_b.append(shared[m][1].expand(n, -1, -1, -1))
            if m in self.a and idx is not None:
                parts_a.append(self.a[m][idx])                                   # (n, L, r, in)
                parts_b.append(self.b[m][idx])                                   # (n, L, out, r)
            if not parts_a:     # a module only the per-author LoRAs adapt, scored without them: no change
                out_f, in_f = self.b[m].shape[2], self.a[m].shape[3]
                parts_a.append(torch.zeros(n, self.a[m].shape[1], 1, in_f, device=self.a[m].device))
                parts_b.append(torch.zeros(n, self.a[m].shape[1], out_f, 1, device=self.a[m].device))
            out[m] = (torch.cat(parts_a, 2), torch.cat(parts_b, 3))
        return out


@dataclass
class Slots:
    """What the LoRAs are trained on and scored with: training example i trains LoRA ``train_slot[i]``; scored
    example i is scored under LoRA ``own[i]`` and under ``other[i]``; ``shown`` holds the scored examples posed
    after the own / the other LoRA's training items, as the app poses a request with "Cite my documents"."""
    n: int
    examples: list[D.Example]
    own: list[int]
    other: list[int]
    train: list[D.Example] = field(default_factory=list)
    train_slot: list[int] = field(default_factory=list)
    shown: dict[str, list[D.Example]] = field(default_factory=dict)


def per_author(users: list[dict], split: C.Split) -> Slots:
    """A LoRA per author, trained on every profile item (leave-one-out examples, both tasks); each query is scored
    under its author's and the next author's."""
    ids = {u["user"]: i for i, u in enumerate(users)}
    ex = split.examples
    train = D.loo_examples(users)
    return Slots(len(users), ex, [ids[e.user] for e in ex], [ids[split.shuffled[e.user]] for e in ex],
                 train, [ids[e.user] for e in train])


def per_request(users: list[dict], split: C.Split, path: Path, tasks=TASKS, queries: int | None = None) -> Slots:
    """Two LoRAs per scored request (a query posed as one task; the first ``queries`` of each author): one trained on
    the author's items the app's retrieval picks for it, one on the next author's items picked for the same
    request (rag_data.request_table, the retrieval ``request_profiles`` caches). Each LoRA trains on its items posed
    as the request's task, the adapter made for that request and nothing else."""
    by = {u["user"]: u for u in users}
    asked = R.request_table(path, [(u, o) for u in users for o in (u, by[split.shuffled[u["user"]]])])
    s = Slots(0, [], [], [])
    for ex, j in zip(split.examples, C.query_indices(split.examples, users)):
        if ex.task not in tasks or (queries is not None and j >= queries):
            continue
        s.examples.append(ex)
        for side, owner in (("own", by[ex.user]), ("other", by[split.shuffled[ex.user]])):
            items = [owner["profile"][i] for i in asked[(ex.user, owner["user"])][f"{j}/{ex.task}"]]
            getattr(s, side).append(s.n)
            s.train += [D.item_example(owner["user"], ex.task, it) for it in items]
            s.train_slot += [s.n] * len(items)
            s.shown.setdefault(side, []).append(
                replace(ex, messages=with_examples(ex.task, ex.messages, [R.stored_item(it) for it in items])))
            s.n += 1
    return s


def run(cfg: TrainConfig, data_dir: Path, shared_from: str, modules: list[str], rank: int, lr: float, epochs: int,
        batch: int, out: Path, max_seconds: float | None = None, per_req: bool = False, tasks=TASKS,
        queries: int | None = None, shown_len: int = 1024) -> dict:
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok, template, spec = load_base(cfg)
    shared = {m: (a.to(device), b.to(device)) for m, (a, b) in
              (shared_lora(REPO / shared_from, cfg, spec) if shared_from else {}).items()}
    scale = cfg.alpha / cfg.rank                   # the shared LoRA's (checked by shared_lora); the per-author one's
    users = D.load_users(data_dir / cfg.dev_data, cfg.dev_users)
    tokens = C.TokenCache(D.CACHE_DIR / C.TokenCache.name(spec.tokenizer_sha, template, cfg.max_len))
    enc = lambda ex: encode(tok, template, ex, cfg.max_len)                         # noqa: E731
    split = C.make_split(users, tokens, enc)                                         # queries: the dev metric's
    slots = (per_request(users, split, data_dir / cfg.dev_data, tasks, queries) if per_req
             else per_author(users, split))
    train = slots.train
    train_items = tokens.get(train, enc)
    eval_items = tokens.get(slots.examples, enc)
    shown_items = {k: [encode(tok, template, e, shown_len) for e in v] for k, v in slots.shown.items()}
    per = PerAuthorLoRA(slots.n, spec.n_layer, {m: spec.module_shape(m) for m in modules}, rank).to(device)
    wrappers = attach_lora(model, tuple(sorted(set(shared) | set(modules))))
    model.to(device)
    opt = torch.optim.Adam(per.parameters(), lr=lr)
    pad = tok.pad_token_id or 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def losses(items, idx: list[int] | None | str) -> torch.Tensor:
        """Answer NLL (b,) under each row's LoRA ``idx``, the shared LoRA alone (None) or nothing ("base")."""
        input_ids, mask, loss_mask = (t.to(device) for t in collate(items, pad))
        if idx == "base":
            set_lora(wrappers, None)
        else:
            set_lora(wrappers, per(None if idx is None else torch.tensor(idx, device=device), shared, len(items)), scale)
        with amp:
            return example_losses(model, input_ids, mask, loss_mask).float()

    def over(items, idx: list[int] | None | str, b: int = batch) -> np.ndarray:
        """The scored examples in batches of b, under the LoRAs idx[i] (or None / "base" for all)."""
        return torch.cat([losses(items[i:i + b], idx if idx is None or isinstance(idx, str) else idx[i:i + b])
                          for i in range(0, len(items), b)]).cpu().numpy()

    fixed: dict[str, np.ndarray] = {}          # what no per-author / per-request LoRA changes: scored once

    @torch.no_grad()
    def evaluate() -> dict:
        ex = slots.examples
        if not fixed:
            fixed["base"] = over(eval_items, "base")
            for k, v in shown_items.items():        # the same items in the prompt, under the shared adapter
                fixed[f"rag-{k}"] = over(v, None, max(1, batch * cfg.max_len // shown_len))
        nll = {"own": over(eval_items, slots.own), "other": over(eval_items, slots.other),
               "shared": over(eval_items, None), **fixed}
        tasks_ = sorted({e.task for e in ex})
        mean = {k: {t: float(np.mean([v[i] for i, e in enumerate(ex) if e.task == t])) for t in tasks_}
                for k, v in nll.items()}
        return {"nll": mean, "person": person_metric(ex, {"dev": nll["own"], "dev_shuffled": nll["other"],
                                                          "dev_base": nll["base"]}),
                "per_example": {k: [round(float(x), 5) for x in v] for k, v in nll.items()}}

    rec = {"config": {"train_config": cfg.name, "shared_from": shared_from, "modules": modules, "rank": rank,
                      "lr": lr, "epochs": epochs, "batch": batch, "users": len(users), "device": device,
                      "per_request": per_req, "loras": slots.n, "train_examples": len(train),
                      "eval_examples": len(slots.examples)},
           "examples": [{"user": e.user, "task": e.task} for e in slots.examples], "epochs": []}
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rng = np.random.default_rng(cfg.seed)
    for epoch in range(epochs + 1):
        if epoch:
            per.train()
            order, seen = rng.permutation(len(train)), []
            for start in range(0, len(train), batch):
                idx = order[start:start + batch]
                loss = losses([train_items[i] for i in idx], [slots.train_slot[i] for i in idx]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(per.parameters(), 1.0)
                opt.step()
                seen.append(loss.item())
        per.eval()
        r = {"epoch": epoch, "train": float(np.mean(seen)) if epoch else None, "elapsed": round(time.time() - t0, 1),
             **evaluate()}
        rec["epochs"].append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "per_example"}), flush=True)
        out.write_text(json.dumps(rec))
        if max_seconds is not None and time.time() - t0 > max_seconds:
            break
    return rec


def _rows(rec: dict, r: dict, users: set[str]) -> list[dict]:
    return [{"user": e["user"], "query": i, "task": e["task"], "method": m, "nll": v[i]}
            for m, v in r["per_example"].items() for i, e in enumerate(rec["examples"]) if e["user"] in users]


def report(paths: list[Path]) -> str:
    """A markdown table, a row per run and task: the epoch whose own-LoRA NLL is lowest on the first half of the
    authors, scored on the other half (so the ceiling is not picked on the numbers it reports); then the best run,
    chosen the same way. other - own alone can mislead: an author's LoRA that overfits makes their own queries
    worse than the shared LoRA while another author's gets worse still, so the gap grows as the adapter gets
    worse. That is why own - shared (the gain of personalizing at all) stands next to it; and, per request, the
    gap the same items make shown in the prompt (rag-other - rag-own), what the weights are measured against."""
    f = lambda c: f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]"                                 # noqa: E731
    lines = ["| run | task | LoRAs per | lr | epoch (chosen on the first half of the authors) | own NLL | own − shared [CI] "
             "| other − own [CI] | in the prompt instead: rag-other − rag-own [CI] |", "|" + "---|" * 9]
    best = None
    for p in paths:
        rec = json.loads(Path(p).read_text())
        order = list(dict.fromkeys(e["user"] for e in rec["examples"]))
        pick, held = set(order[:len(order) // 2]), set(order[len(order) // 2:])
        own_on = lambda r, us: float(np.mean([v for v, e in zip(r["per_example"]["own"], rec["examples"])  # noqa: E731
                                              if e["user"] in us]))
        r = min(rec["epochs"], key=lambda r: own_on(r, pick))
        rows = _rows(rec, r, held)
        c = rec["config"]
        for t in sorted({e["task"] for e in rec["examples"]}):
            own = np.mean([x["nll"] for x in rows if x["method"] == "own" and x["task"] == t])
            rag = (f(paired_bootstrap(rows, "rag-other", "rag-own", t, "nll")) if "rag-own" in r["per_example"]
                   else "–")
            lines.append(f"| {Path(p).stem} | {t} | {'request' if c.get('per_request') else 'author'} | {c['lr']:g} "
                         f"| {r['epoch']} | {own:.4f} | {f(paired_bootstrap(rows, 'own', 'shared', t, 'nll'))} "
                         f"| {f(paired_bootstrap(rows, 'other', 'own', t, 'nll'))} | {rag} |")
        if best is None or own_on(r, pick) < best[0]:
            best = (own_on(r, pick), Path(p).stem, r["epoch"])
    lines.append(f"\nchosen on the first half of the authors over all runs and epochs: {best[1]}, epoch {best[2]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", nargs="+", type=Path, help="only print the table of these runs' JSON files")
    ap.add_argument("--config", type=Path, help="a training config: base model, dev file, users, max_len")
    ap.add_argument("--shared", default="", help="an mt-lora checkpoint whose LoRA every author's adds to")
    ap.add_argument("--modules", default="q_proj,v_proj")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--users", type=int, default=None, help="dev authors (default: the config's dev_users)")
    ap.add_argument("--per-request", action="store_true", help="a LoRA per request and owner, not per author")
    ap.add_argument("--tasks", default=",".join(TASKS), help="with --per-request: the tasks scored")
    ap.add_argument("--queries", type=int, default=None, help="with --per-request: each author's first N queries")
    ap.add_argument("--data-dir", type=Path, default=D.DATA_DIR)
    ap.add_argument("--max-seconds", type=float, default=None, help="stop after the epoch that passes this")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    if a.report:
        print(report(a.report))
        return
    if a.config is None or a.out is None:
        ap.error("--config and --out are needed to run (or --report to table runs)")
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = TrainConfig.load(a.config)
    if a.users:
        cfg = replace(cfg, dev_users=a.users)
    run(cfg, a.data_dir, a.shared, a.modules.split(","), a.rank, a.lr, a.epochs, a.batch, a.out, a.max_seconds,
        a.per_request, tuple(a.tasks.split(",")), a.queries)


if __name__ == "__main__":
    main()
