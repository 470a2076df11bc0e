"""LoRA adapters in llama.cpp's GGUF format: write, read back, validate.

Tensors are stored in PEFT layout — ``lora_a`` as ``[r, in]`` and ``lora_b``
as ``[out, r]`` (numpy order; GGUF reverses it to ggml's ``ne``) — so that
``scale * B @ A`` is the weight delta PEFT's ``get_delta_weight`` gives.

One trap: when llama.cpp converts a HF llama checkpoint, it permutes the rows
of q_proj and k_proj so rope can rotate adjacent pairs. A LoRA trained in HF
layout must have the rows of its q/k ``lora_b`` permuted the same way (``A``
acts on the input side and stays). Without it the adapter loads fine and is
silently wrong; tests/test_adapter_correctness.py proves the difference.

Every GGUF file, base models included (app.base_model), goes through this
module's bounded header walk before gguf's reader sees it: that reader trusts
the header and can be made to loop by one damaged byte.
"""
from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:      # app.base_model reads GGUF headers with this module: a runtime import would be a cycle
    from .base_model import BaseSpec

# HF module name -> llama.cpp tensor base name
MODULE_TO_GGUF = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}
GGUF_TO_MODULE = {v: k for k, v in MODULE_TO_GGUF.items()}
MAX_ADAPTER_BYTES = 512 * 1024 * 1024


class AdapterError(RuntimeError):
    """An adapter file is unreadable, tampered with or made for another model."""


@dataclass
class LoraAdapter:
    """A LoRA in HF/PEFT layout: weights[(layer, module)] = (A [r, in], B [out, r])."""
    weights: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    alpha: float
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return next(iter(self.weights.values()))[0].shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self, layer: int, module: str) -> np.ndarray:
        """scale * B @ A, the same as PEFT's get_delta_weight (no fan_in_fan_out)."""
        a, b = self.weights[(layer, module)]
        return self.scale * (b.astype(np.float64) @ a.astype(np.float64))


def write_adapter(adapter: LoraAdapter, path: Path, spec: BaseSpec, *, permute_qk: bool = True) -> Path:
    """Write atomically: a temp file in the same dir, fsync, rename.

    ``permute_qk=False`` exists only so a test can show the broken variant fails.
    """
    import gguf
    validate(adapter, spec)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=spec.architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(adapter.alpha))
    for key, value in sorted(adapter.metadata.items()):
        if key not in ("base_fingerprint", "tensors_sha256"):     # (re)computed below
            writer.add_string(f"tailor.{key}", str(value))
    writer.add_string("tailor.base_fingerprint", spec.fingerprint())
    tensors = []
    for (layer, module), (a, b) in sorted(adapter.weights.items()):
        heads = _rope_heads(module, spec)
        if permute_qk and heads:
            b = rope_permute(b, heads)
        name = f"blk.{layer}.{MODULE_TO_GGUF[module]}.weight"
        tensors.append((f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32)))
        tensors.append((f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32)))
    writer.add_string("tailor.tensors_sha256", tensors_sha256(tensors))
    for name, t in tensors:
        writer.add_tensor(name, t)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def tensors_sha256(tensors) -> str:
    """SHA-256 over (name, shape, float32 bytes) of an adapter's tensors as stored in the file.

    Written as ``tailor.tensors_sha256`` so that a modified or damaged adapter is refused on reading
    instead of loading and quietly changing the model."""
    h = hashlib.sha256()
    for name, t in sorted(tensors, key=lambda nt: nt[0]):
        t = np.ascontiguousarray(t, dtype="<f4")
        h.update(f"{name}:{list(t.shape)}:".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def read_adapter(path: Path, spec: BaseSpec | None = None) -> LoraAdapter:
    """Read an adapter back into PEFT layout; with ``spec``, validate it against the base model.

    However the file is damaged, the only exception that comes out is AdapterError
    (tests/test_tamper.py feeds it thousands of mutated files)."""
    try:
        return _read_adapter(Path(path), spec)
    except AdapterError:
        raise
    except Exception as exc:    # a parser path nobody foresaw: still the same clear refusal
        raise AdapterError(f"adapter {path} is damaged ({type(exc).__name__}: {exc})") from exc


def _read_adapter(path: Path, spec: BaseSpec | None) -> LoraAdapter:
    import gguf
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AdapterError(f"adapter {path} cannot be read ({exc.strerror})") from exc
    if size > MAX_ADAPTER_BYTES:
        raise AdapterError(f"adapter {path} is {size} bytes, over the {MAX_ADAPTER_BYTES} limit")
    try:
        check_gguf_structure(path)
        reader = gguf.GGUFReader(str(path))
        fields = {k: f.contents() for k, f in reader.fields.items()}
    except Exception as exc:   # gguf raises ValueError/IndexError/struct errors on damaged files
        raise AdapterError(f"adapter {path} is not a valid GGUF file ({type(exc).__name__}: {exc})") from exc
    if fields.get("general.type") != "adapter" or fields.get("adapter.type") != "lora":
        raise AdapterError(f"{path} is not a LoRA adapter (general.type={fields.get('general.type')!r})")
    try:
        tensors = {}
        for t in reader.tensors:
            if t.tensor_type.name != "F32":
                raise AdapterError(f"adapter {path}: tensor {t.name} is {t.tensor_type.name}, expected F32")
            tensors[t.name] = np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
    except AdapterError:
        raise
    except Exception as exc:
        raise AdapterError(f"adapter {path} is not a valid GGUF file ({type(exc).__name__}: {exc})") from exc
    stamped = fields.get("tailor.tensors_sha256")
    if stamped is not None and stamped != tensors_sha256(tensors.items()):
        raise AdapterError(f"adapter {path} does not match its SHA-256 (modified or damaged); "
                           "delete it and run `tailor adapt`")
    alpha = fields.get("adapter.lora.alpha")
    if not isinstance(alpha, float) or not np.isfinite(alpha):
        raise AdapterError(f"adapter {path} has no valid adapter.lora.alpha")
    arch = fields.get("general.architecture")
    if spec is not None and arch != spec.architecture:
        raise AdapterError(f"adapter {path} is for architecture {arch!r}, the base model is {spec.architecture!r}")
    weights: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    for name, a in tensors.items():
        if not name.endswith(".lora_a"):
            continue
        parts = name.split(".")
        if len(parts) != 5 or parts[0] != "blk" or not parts[1].isdigit() or parts[2] not in GGUF_TO_MODULE:
            raise AdapterError(f"adapter {path} has an unexpected tensor {name!r}")
        b = tensors.get(name[:-len("a")] + "b")
        if b is None:
            raise AdapterError(f"adapter {path}: {name} has no matching lora_b")
        layer, module = int(parts[1]), GGUF_TO_MODULE[parts[2]]
        weights[(layer, module)] = (a, b)
    if not weights:
        raise AdapterError(f"adapter {path} holds no LoRA tensors")
    meta = {k[len("tailor."):]: str(v) for k, v in fields.items() if k.startswith("tailor.")}
    adapter = LoraAdapter(weights=weights, alpha=float(alpha), metadata=meta)
    if spec is not None:
        if meta.get("base_fingerprint") not in (None, spec.fingerprint()):
            raise AdapterError(f"adapter {path} was made for another base model "
                               f"(fingerprint {meta.get('base_fingerprint')}, this model {spec.fingerprint()})")
        validate(adapter, spec)
        for (layer, module), (a, b) in adapter.weights.items():
            heads = _rope_heads(module, spec)
            if heads:
                adapter.weights[(layer, module)] = (a, rope_unpermute(b, heads))
    return adapter


def validate(adapter: LoraAdapter, spec: BaseSpec) -> None:
    """Shapes, rank and finiteness, checked before an adapter goes near llama.cpp."""
    if not adapter.weights:
        raise AdapterError("adapter holds no LoRA tensors")
    rank = adapter.rank
    if not (np.isfinite(adapter.alpha) and adapter.alpha > 0):
        raise AdapterError(f"adapter alpha {adapter.alpha} is not a positive number")
    for (layer, module), (a, b) in adapter.weights.items():
        if not 0 <= layer < spec.n_layer:
            raise AdapterError(f"adapter has layer {layer}; the base model has {spec.n_layer}")
        out_f, in_f = spec.module_shape(module)
        if a.shape != (rank, in_f) or b.shape != (out_f, rank):
            raise AdapterError(f"adapter tensor for layer {layer} {module} has shapes A{a.shape} B{b.shape}; "
                               f"the base model needs A{(rank, in_f)} B{(out_f, rank)}")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise AdapterError(f"adapter tensor for layer {layer} {module} holds NaN or infinite values")


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row permutation for q/k (convert_hf_to_gguf.LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope_heads(module: str, spec: BaseSpec) -> int | None:
    if spec.architecture != "llama":
        return None
    return {"q_proj": spec.n_head, "k_proj": spec.n_head_kv}.get(module)


_GGUF_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
MAX_GGUF_ARRAY = 1 << 22          # elements in one metadata array (a 256k vocabulary fits many times)


def check_gguf_structure(path: Path) -> None:
    """Walk a GGUF header with every length and count checked against the file size; ValueError if not sound.

    gguf.GGUFReader trusts the header: with a damaged count it reads past the end of the file, gets empty
    arrays, stops advancing and loops for up to 2**64 iterations, so one bad byte could hang the app. This
    walk is bounded by the file size, so it runs before any GGUFReader sees a file."""
    import mmap
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise ValueError("file is too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            _walk_gguf(m, size)


def _walk_gguf(m, size: int) -> None:
    if m[:4] != b"GGUF":
        raise ValueError("not a GGUF file (bad magic)")
    order = ">" if struct.unpack_from("<I", m, 4)[0] & 0xFFFF == 0 else "<"     # byte-swapped files exist

    def need(off: int, n: int) -> None:
        if n < 0 or off + n > size:
            raise ValueError(f"a header field at byte {off} runs past the end of the file")

    def uint(off: int, fmt: str) -> int:
        need(off, struct.calcsize(fmt))
        return struct.unpack_from(order + fmt, m, off)[0]

    def value(off: int, vtype: int, depth: int = 0) -> int:
        if vtype == _GGUF_STRING:
            n = uint(off, "Q")
            need(off + 8, n)
            return off + 8 + n
        if vtype == _GGUF_ARRAY:
            itype, count = uint(off, "I"), uint(off + 4, "Q")
            off += 12
            if depth > 2 or count > MAX_GGUF_ARRAY:
                raise ValueError(f"implausible metadata array at byte {off - 12} ({count} elements)")
            if itype in _GGUF_SCALAR_SIZE:
                need(off, count * _GGUF_SCALAR_SIZE[itype])
                return off + count * _GGUF_SCALAR_SIZE[itype]
            for _ in range(count):
                off = value(off, itype, depth + 1)
            return off
        if vtype not in _GGUF_SCALAR_SIZE:
            raise ValueError(f"unknown metadata value type {vtype} at byte {off}")
        need(off, _GGUF_SCALAR_SIZE[vtype])
        return off + _GGUF_SCALAR_SIZE[vtype]

    n_tensors, n_kv = uint(8, "Q"), uint(16, "Q")
    if n_kv * 13 + n_tensors * 24 > size - 24:      # the smallest possible entries would not fit
        raise ValueError(f"header claims {n_kv} metadata entries and {n_tensors} tensors; the file is too small")
    off = 24
    for _ in range(n_kv):
        off = value(off, _GGUF_STRING)               # key
        off = value(off + 4, uint(off, "I"))
    for _ in range(n_tensors):
        off = value(off, _GGUF_STRING)               # name
        n_dims = uint(off, "I")
        if n_dims > 4:
            raise ValueError(f"tensor at byte {off} has {n_dims} dimensions (at most 4)")
        need(off + 4, 8 * n_dims + 12)
        off += 4 + 8 * n_dims + 12


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
