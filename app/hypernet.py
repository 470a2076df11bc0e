"""Run the shipped ONNX hypernetwork: profile vector -> LoRA adapter (HF layout).

The ONNX file carries its own contract in metadata (app.hypernet_meta: pooling,
rank, alpha, target modules, base-model fingerprint). A hypernetwork made for another base
model is refused here, before it can produce an adapter that loads and is wrong.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .base_model import BaseSpec
from .hypernet_meta import FORMAT, HypernetMeta, HypernetMetaError
from .lora_gguf import LoraAdapter
from .paths import assets_dir


class HypernetError(RuntimeError):
    pass


def default_hypernet_path() -> Path:
    return assets_dir() / "hypernet" / "hypernet.onnx"


# --- integrity stamp ------------------------------------------------------------------
# An ONNX file is a protobuf ModelProto; appending one more ``metadata_props`` entry (field 14) to the
# serialized bytes gives a valid model with that entry added. The stamp is such an entry whose value is
# the SHA-256 of everything before it, so the file carries its own checksum and no other file is needed.
INTEGRITY_KEY = "tailor.onnx_sha256"


def _pb_bytes(field: int, payload: bytes) -> bytes:
    assert len(payload) < 128     # one-byte length varints are all this needs
    return bytes([field << 3 | 2, len(payload)]) + payload


def _stamp(digest: str) -> bytes:
    return _pb_bytes(14, _pb_bytes(1, INTEGRITY_KEY.encode()) + _pb_bytes(2, digest.encode()))


_STAMP_LEN = len(_stamp("0" * 64))


def stamp_integrity(path: Path) -> str:
    """Append the integrity stamp to an exported hypernetwork (hypernet_onnx.export should call this)."""
    path = Path(path)
    data = path.read_bytes()
    if _stamped_digest(data) is not None:
        data = data[:-_STAMP_LEN]
    digest = hashlib.sha256(data).hexdigest()
    tmp = path.with_name(path.name + ".stamping")
    tmp.write_bytes(data + _stamp(digest))
    tmp.replace(path)
    return digest


def _stamped_digest(data: bytes) -> str | None:
    tail = data[-_STAMP_LEN:]
    if len(data) <= _STAMP_LEN or tail[:-64] != _stamp("0" * 64)[:-64]:
        return None
    return tail[-64:].decode("ascii", errors="replace")


def verify_integrity(path: Path) -> bool:
    """True when the file carries a stamp that matches; HypernetError when the stamp does not match;
    False for a file without a stamp."""
    data = Path(path).read_bytes()
    digest = _stamped_digest(data)
    if digest is None:
        return False
    if hashlib.sha256(data[:-_STAMP_LEN]).hexdigest() != digest:
        raise HypernetError(f"hypernetwork {path} does not match its SHA-256 (modified or damaged); "
                            "reinstall Tailor or export it again")
    return True


class Hypernet:
    def __init__(self, path: Path | None = None, spec: BaseSpec | None = None, threads: int | None = None):
        import onnxruntime as ort
        self.path = Path(path) if path else default_hypernet_path()
        if not self.path.is_file():
            raise HypernetError(f"hypernetwork not found: {self.path}; reinstall Tailor or pass --hypernet FILE")
        try:
            stamped = verify_integrity(self.path)       # before any parser sees the bytes
        except OSError as exc:
            raise HypernetError(f"hypernetwork {self.path} cannot be read ({exc.strerror or exc})") from exc
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:
            raise HypernetError(f"hypernetwork {self.path} cannot be loaded ({' '.join(str(exc).split())[:300]}); "
                                "the file is damaged — reinstall Tailor") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise HypernetError(f"{self.path} is not a Tailor hypernetwork (format={meta.get('format')!r})")
        if INTEGRITY_KEY in meta and not stamped:
            raise HypernetError(f"hypernetwork {self.path} was modified after it was stamped (SHA-256 stamp "
                                "is not at the end of the file); reinstall Tailor or export it again")
        self.meta = meta                 # the strings as stored, integrity stamp included
        try:
            self.contract = HypernetMeta.from_onnx_metadata(meta)
        except HypernetMetaError as exc:
            raise HypernetError(f"hypernetwork {self.path} has incomplete metadata ({exc}); "
                                "reinstall Tailor or export it again") from exc
        c = self.contract
        self.id, self.pooling, self.input_dim, self.rank, self.alpha = \
            c.hypernet_id, c.pooling, c.input_dim, c.rank, c.alpha
        self.modules = list(c.target_modules)
        self.base_fingerprint, self.embedder_id = c.base_fingerprint, c.embedder_id
        from .models import EMBEDDER_ID
        if self.embedder_id != EMBEDDER_ID:        # its input would be another model's embeddings: wrong, silently
            raise HypernetError(f"hypernetwork {self.path.name} expects profiles embedded with {self.embedder_id}, "
                                f"but Tailor embeds with {EMBEDDER_ID}; use a hypernetwork trained for it")
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
        try:
            outs = self.session.run(None, {"profile": profile})
            names = [o.name for o in self.session.get_outputs()]
            by_name = dict(zip(names, outs))
            weights = {}
            for m in self.modules:
                a, b = by_name[f"{m}.lora_a"], by_name[f"{m}.lora_b"]          # (L, r, in), (L, out, r)
                for layer in range(a.shape[0]):
                    weights[(layer, m)] = (a[layer], b[layer])
        except Exception as exc:     # a graph whose inputs/outputs do not match its metadata
            raise HypernetError(f"hypernetwork {self.path.name} does not produce a LoRA ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}); reinstall Tailor") from exc
        return LoraAdapter(weights=weights, alpha=self.alpha, metadata={"hypernet_id": self.id})

    def info(self) -> dict:
        keep = ("hypernet_id", "pooling", "rank", "alpha", "target_modules", "training_steps", "dev_nll",
                "training_data_sha256", "base_fingerprint", "embedder_id")
        return {"path": str(self.path), **{k: self.meta.get(k) for k in keep}}
