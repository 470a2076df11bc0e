"""Export a trained hypernetwork checkpoint to ONNX, with the metadata the app checks.

    python -m hypernet_onnx.export --ckpt runs/small/best.pt --out assets/hypernet/hypernet.onnx

Inputs:  ``profile`` float32 (1, P) — app.profile.profile_vector(..., pooling)
Outputs: ``{module}.lora_a`` float32 (L, r, in), ``{module}.lora_b`` float32 (L, out, r), HF layout
(the GGUF writer applies llama.cpp's q/k permutation).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from app.hypernet_meta import HypernetMeta
from app.models import EMBEDDER_ID
from hypernet_onnx.model import HyperConfig, HyperNet


class _Single(torch.nn.Module):
    def __init__(self, hyper: HyperNet):
        super().__init__()
        self.hyper = hyper

    def forward(self, profile):                       # (1, P)
        out = self.hyper(profile)
        return tuple(t[0] for m in self.hyper.cfg.modules for t in out[m])


def load_checkpoint(path: Path) -> tuple[HyperNet, dict]:
    st = torch.load(path, map_location="cpu", weights_only=False)
    hyper = HyperNet(HyperConfig.from_dict(st["hyper_config"]))
    hyper.load_state_dict(st["hyper"])      # strict
    return hyper.eval(), st


def metadata(st: dict) -> HypernetMeta:
    cfg = HyperConfig.from_dict(st["hyper_config"])
    hc = cfg.to_dict()
    rank = cfg.out_rank          # a residual design emits its shared LoRA and its residual side by side
    alpha = cfg.out_alpha
    log = st.get("log") or [{}]
    best = min((r for r in log if "dev" in r), key=lambda r: r["dev"], default={})
    return HypernetMeta(
        hypernet_id=f"{st['train_config']['name']}-s{st['step']}-{st['data_hash'][:8]}",
        base_fingerprint=st["base_fingerprint"], embedder_id=EMBEDDER_ID, pooling=hc["pooling"],
        input_dim=hc["input_dim"], rank=rank, alpha=alpha, target_modules=tuple(hc["modules"]),
        n_layers=hc["n_layers"], training_data_sha256=st["data_hash"], training_steps=st["step"],
        dev_nll=best.get("dev", float("nan")),
        io={"inputs": {"profile": [1, hc["input_dim"]]},
            "outputs": {f"{m}.lora_{x}": ([hc["n_layers"], rank, hc["shapes"][m][1]] if x == "a"
                                          else [hc["n_layers"], hc["shapes"][m][0], rank])
                        for m in hc["modules"] for x in "ab"}},
        config=hc)


def slim(ckpt: Path, out: Path) -> Path:
    """The checkpoint without its optimizer state, weights in fp16: half the size, for bringing a run back from
    a machine that returns small files (export loads it like any checkpoint; the weights round to fp16)."""
    st = torch.load(ckpt, map_location="cpu", weights_only=False)
    st = {k: v for k, v in st.items() if k not in ("opt", "torch_rng")}
    st["hyper"] = {k: v.half() if v.is_floating_point() else v for k, v in st["hyper"].items()}
    torch.save(st, out)
    return out


def export(ckpt: Path, out: Path) -> Path:
    import onnx
    hyper, st = load_checkpoint(ckpt)
    if st["train_config"].get("request_profiles"):
        raise SystemExit(f"{ckpt} was trained on per-request profiles (the items retrieved for each request); the "
                         "app feeds a whole profile and makes no adapter per request yet, so it would run this "
                         "file on inputs it never saw. Build that in the app before exporting such a run.")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [f"{m}.lora_{x}" for m in hyper.cfg.modules for x in "ab"]
    dummy = torch.zeros(1, hyper.cfg.input_dim)
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(_Single(hyper), (dummy,), str(tmp), input_names=["profile"], output_names=names,
                          opset_version=17, dynamo=False)
    model = onnx.load(str(tmp))
    for k, v in metadata(st).to_onnx_metadata().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(out))
    tmp.unlink()
    from app.hypernet import stamp_integrity
    stamp_integrity(out)          # SHA-256 appended: a bit flip in the shipped file is refused at load
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("assets/hypernet/hypernet.onnx"))
    ap.add_argument("--slim", action="store_true", help="write a slim fp16 checkpoint to --out instead of ONNX")
    a = ap.parse_args()
    print(slim(a.ckpt, a.out) if a.slim else export(a.ckpt, a.out))
