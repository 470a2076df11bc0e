"""Does the shipped hypernetwork's person part help on top of a better shared LoRA? (issue 11, torch, no training)

The fair control (mt-lora-1000: one LoRA trained like the shipped file, profile zeroed) beats the shipped file by
~0.07 nats, more than the file's own-vs-shuffled gap. This scores, without training anything, the adapter

    dW(p) = dW_mt + gamma * (dW_hyper(p) - dW_hyper(p_bar))        p_bar = the training authors' mean profile

i.e. the shared LoRA plus the shipped hypernetwork's *deviation* from its average person (exactly dW_mt for the
average person), as one rank-24 LoRA: A = [A_mt; A_h(p); A_h(p_bar)], B = [B_mt, g B_h(p), -g B_h(p_bar)].

    python scripts/shared_plus_person.py --mt-lora runs/mt-lora-1000/ckpt.pt --users 120 --gammas 0.5,1 \
        --threads 2 --out runs/s17/spp-120.json          # MODEL_CARD: "The shared LoRA plus this file's person part"

Per dev author (the first --users of mlpapers-dev, 4 queries each), per-example answer NLL under: the base, the
shipped file (own / shuffled profile), the mt-lora alone, and the combination at each gamma (own / shuffled);
written with the paired bootstrap CIs (users resampled) for the comparisons issue 11 names.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hypernet_onnx import data as D  # noqa: E402
from hypernet_onnx.export import load_checkpoint  # noqa: E402
from hypernet_onnx.stats import paired_bootstrap  # noqa: E402
from hypernet_onnx.train import TrainConfig, Trainer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class OnnxHyper(nn.Module):
    """A shipped hypernetwork.onnx behind HyperNet's interface (profile (B, P) -> {m: (A, B)}), for scoring."""

    def __init__(self, path: Path, modules: tuple[str, ...], scale: float):
        super().__init__()
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.sess.get_outputs()]
        self.modules, self.scale = modules, scale

    def forward(self, profile: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        rows = [dict(zip(self.names, self.sess.run(None, {"profile": p[None].numpy().astype(np.float32)})))
                for p in profile]
        return {m: (torch.tensor(np.stack([r[f"{m}.lora_a"] for r in rows])),            # (B, L, r, in)
                    torch.tensor(np.stack([r[f"{m}.lora_b"] for r in rows])))            # (B, L, out, r)
                for m in self.modules}


class SharedPlusPerson(nn.Module):
    """dW_mt + gamma (dW_h(p) - dW_h(p_bar)) as one LoRA; all three parts share the scale alpha / r = 2."""

    def __init__(self, mt: nn.Module, hyper: OnnxHyper, p_bar: torch.Tensor, gamma: float):
        super().__init__()
        self.mt, self.hyper, self.gamma, self.scale = mt, hyper, gamma, hyper.scale
        with torch.no_grad():
            self.shared = mt(torch.zeros(1, p_bar.shape[-1]))                              # {m: (1, L, r, in), ...}
        self.mean = hyper(p_bar[None])

    def forward(self, profile: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        own = self.hyper(profile)
        n, out = profile.shape[0], {}
        for m, (a, b) in own.items():
            (a0, b0), (am, bm) = self.shared[m], self.mean[m]
            out[m] = (torch.cat([a0.expand(n, -1, -1, -1), a, am.expand(n, -1, -1, -1)], 2),
                      torch.cat([b0.expand(n, -1, -1, -1), self.gamma * b, -self.gamma * bm.expand(n, -1, -1, -1)], 3))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mt-lora", type=Path, required=True, help="an mt-lora run's checkpoint (profile zeroed)")
    ap.add_argument("--hypernet", type=Path, default=REPO / "assets/hypernet/hypernet.onnx")
    ap.add_argument("--config", type=Path, default=REPO / "hypernet_onnx/configs/small.toml",
                    help="the shipped file's training config (its data, profiles and dev split)")
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--gammas", default="1")
    ap.add_argument("--data-dir", type=Path, default=D.DATA_DIR)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    cfg = TrainConfig.load(a.config)
    cfg = dataclasses.replace(cfg, out_dir="runs/shared-plus-person", dev_users=a.users, ood_data="", chat_users=0,
                              chat_kl=0.0, threads=a.threads, bf16=False)
    tr = Trainer(cfg, a.data_dir)
    mt, st = load_checkpoint(a.mt_lora)
    if st["train_config"].get("profile_input") != "zeros":
        raise SystemExit(f"{a.mt_lora} is not an mt-lora run")
    hyper = OnnxHyper(a.hypernet, tuple(cfg.modules), tr.hyper.scale)
    if mt.scale != hyper.scale or tuple(mt.cfg.modules) != hyper.modules:
        raise SystemExit(f"{a.mt_lora} adapts {list(mt.cfg.modules)} at scale {mt.scale}; the hypernetwork "
                         f"{list(hyper.modules)} at {hyper.scale}: one LoRA needs one scale")
    train_users = sorted({ex.user for ex in tr.train})
    p_bar = torch.tensor(np.stack([tr.profiles[u] for u in train_users]).mean(0))           # (P,)
    sp = tr.splits["dev"]
    n = len(sp.examples)

    def score(net: nn.Module | None, shuffled: bool = False) -> list[float]:
        if net is None:
            return tr._batched(n, lambda s: tr.nll_under(None, sp.items[s])).tolist()
        tr.hyper = net.eval()
        f = sp.shuffled_key if shuffled else None
        with torch.no_grad():
            return tr._batched(n, lambda s: tr.losses(sp.examples[s], f, sp.items[s])).tolist()

    nll = {"base": score(None), "p2p": score(hyper), "p2p-shuffled": score(hyper, True)}
    nll["mt-lora"] = score(_Zeros(mt))
    for g in [float(x) for x in a.gammas.split(",")]:
        comb = SharedPlusPerson(mt, hyper, p_bar, g)
        nll[f"mt+person{g:g}"], nll[f"mt+person{g:g}-shuffled"] = score(comb), score(comb, True)
        print(json.dumps({m: round(float(np.mean(v)), 4) for m, v in nll.items()}), flush=True)
    rows = [{"user": ex.user, "query": i, "task": ex.task, "method": m, "nll": v[i]}
            for m, v in nll.items() for i, ex in enumerate(sp.examples)]
    users = list(dict.fromkeys(ex.user for ex in sp.examples))
    report = {"users": len(users), "means": {}, "paired": {}}
    for task in sorted({ex.task for ex in sp.examples}):
        report["means"][task] = {m: round(float(np.mean([r["nll"] for r in rows if r["method"] == m
                                                          and r["task"] == task])), 4) for m in nll}
        pairs = [("p2p", "mt-lora"), ("p2p-shuffled", "p2p")]
        for g in a.gammas.split(","):
            k = f"mt+person{float(g):g}"
            pairs += [(k, "mt-lora"), (f"{k}-shuffled", k), (k, "p2p")]
        report["paired"][task] = {f"{x} - {y}": {k: round(v, 4) for k, v in paired_bootstrap(rows, x, y, task, "nll").items()}
                                  for x, y in pairs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"report": report, "rows": rows}, indent=1))
    print(json.dumps(report, indent=1))


class _Zeros(nn.Module):
    """An mt-lora HyperNet fed the zero profile it was trained on, whatever profile is asked for."""

    def __init__(self, mt: nn.Module):
        super().__init__()
        self.mt, self.scale = mt, mt.scale

    def forward(self, profile: torch.Tensor):
        return self.mt(torch.zeros_like(profile))


if __name__ == "__main__":
    main()
