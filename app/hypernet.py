"""Run the shipped ONNX hypernetwork: profile vector -> LoRA adapter (HF layout).

The ONNX file carries its own contract in metadata (pooling, rank, alpha,
target modules, base-model fingerprint). A hypernetwork made for another base
model is refused here, before it can produce an adapter that loads and is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .lora_gguf import BaseSpec, LoraAdapter
from .paths import assets_dir


class HypernetError(RuntimeError):
    pass


def default_hypernet_path() -> Path:
    return assets_dir() / "hypernet" / "hypernet.onnx"


class Hypernet:
    def __init__(self, path: Path | None = None, spec: BaseSpec | None = None, threads: int | None = None):
        import onnxruntime as ort
        self.path = Path(path) if path else default_hypernet_path()
        if not self.path.is_file():
            raise HypernetError(f"hypernetwork not found: {self.path}; reinstall Tailor or pass --hypernet FILE")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:
            raise HypernetError(f"hypernetwork {self.path} cannot be loaded ({exc}); the file is damaged — "
                                "reinstall Tailor") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != "tailor-hypernet/1":
            raise HypernetError(f"{self.path} is not a Tailor hypernetwork (format={meta.get('format')!r})")
        self.meta = meta
        self.id = meta["hypernet_id"]
        self.pooling = meta["pooling"]
        self.input_dim = int(meta["input_dim"])
        self.rank = int(meta["rank"])
        self.alpha = float(meta["alpha"])
        self.modules = meta["target_modules"].split(",")
        self.base_fingerprint = meta["base_fingerprint"]
        if spec is not None:
            self.check_base(spec)

    def check_base(self, spec: BaseSpec) -> None:
        if spec.fingerprint() != self.base_fingerprint:
            raise HypernetError(
                f"hypernetwork {self.path.name} was trained for another base model (fingerprint "
                f"{self.base_fingerprint}, the loaded model is {spec.fingerprint()}); use the bundled base model "
                "or a hypernetwork trained for this one")

    def generate(self, profile: np.ndarray) -> LoraAdapter:
        profile = np.asarray(profile, dtype=np.float32).reshape(1, -1)
        if profile.shape[1] != self.input_dim:
            raise HypernetError(f"profile vector has {profile.shape[1]} values; the hypernetwork expects {self.input_dim}")
        outs = self.session.run(None, {"profile": profile})
        names = [o.name for o in self.session.get_outputs()]
        by_name = dict(zip(names, outs))
        weights = {}
        for m in self.modules:
            a, b = by_name[f"{m}.lora_a"], by_name[f"{m}.lora_b"]          # (L, r, in), (L, out, r)
            for layer in range(a.shape[0]):
                weights[(layer, m)] = (a[layer], b[layer])
        return LoraAdapter(weights=weights, alpha=self.alpha, metadata={"hypernet_id": self.id})

    def info(self) -> dict:
        keep = ("hypernet_id", "pooling", "rank", "alpha", "target_modules", "training_steps", "dev_nll",
                "training_data_sha256", "base_fingerprint", "embedder_id")
        return {"path": str(self.path), **{k: self.meta.get(k) for k in keep}}


def io_spec(meta: dict) -> dict:
    return json.loads(meta["io"])
