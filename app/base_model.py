"""The base model's shapes, as an adapter or a hypernetwork must fit them.

Read from the GGUF header. Parsing costs 2-5 s (gguf reads ~100k vocabulary
strings), which every `tailor` command would pay at start, so a parsed spec is
kept for the process and, when the caller names a file, on disk. Where that
file lives is the caller's business (the core keeps it in its data dir); this
module knows nothing of the app's directories.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .lora_gguf import AdapterError, check_gguf_structure

MAX_CACHED_SPECS = 16          # a few models at most; the oldest entries go


@dataclass(frozen=True)
class BaseSpec:
    """The shapes of a base model that an adapter must fit."""
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    tokenizer_sha: str

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def module_shape(self, module: str) -> tuple[int, int]:
        """(out_features, in_features) of a projection, as in HF's nn.Linear."""
        kv = self.n_head_kv * self.head_dim
        return {
            "q_proj": (self.n_embd, self.n_embd), "k_proj": (kv, self.n_embd), "v_proj": (kv, self.n_embd),
            "o_proj": (self.n_embd, self.n_embd), "gate_proj": (self.n_ff, self.n_embd),
            "up_proj": (self.n_ff, self.n_embd), "down_proj": (self.n_embd, self.n_ff),
        }[module]

    def fingerprint(self) -> str:
        """Identifies the model family an adapter or hypernetwork is made for.

        Structural (shapes + tokenizer), not the file hash, so another
        quantization of the same model is accepted; the bundled file's own
        integrity is checked separately against its pinned SHA-256.
        """
        blob = json.dumps(self.__dict__, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SPEC_CACHE: dict[tuple[str, int, int], BaseSpec] = {}


def read_base_spec(gguf_path: Path, cache_file: Path | None = None) -> BaseSpec:
    """The base model's shapes, parsed once per file version.

    ``cache_file``: where to keep parsed specs between processes (keyed like the in-process cache by
    path, size and mtime); None keeps them for this process only. The file's integrity is not taken
    from this cache: the bundled model is checked against its pinned SHA-256 separately."""
    try:
        key = _file_version(gguf_path)
    except OSError as exc:
        raise AdapterError(f"{gguf_path} cannot be read ({exc.strerror})") from exc
    if key not in _SPEC_CACHE:
        _SPEC_CACHE[key] = _read_through(gguf_path, key, cache_file) if cache_file else _parse(gguf_path)
    return _SPEC_CACHE[key]


def _file_version(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns), so a replaced or edited model is parsed again. The same key as
    app.paths.file_version, computed here so that this layer does not depend on the app's paths."""
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


def _read_through(gguf_path: Path, key: tuple, cache_file: Path) -> BaseSpec:
    disk, disk_key = _load_disk_cache(cache_file), json.dumps(key)
    spec = _spec_from_cache(disk.get(disk_key))
    if spec is None:
        spec = _parse(gguf_path)
        disk[disk_key] = asdict(spec)
        _save_disk_cache(cache_file, disk)
    return spec


def _spec_from_cache(stored) -> BaseSpec | None:
    """A cached spec, or None if absent or not exactly BaseSpec's fields and types (then parse again)."""
    if not isinstance(stored, dict) or set(stored) != {f.name for f in fields(BaseSpec)}:
        return None
    if not all(type(stored[f.name]).__name__ == f.type for f in fields(BaseSpec)):
        return None
    return BaseSpec(**stored)


def _load_disk_cache(cache_file: Path) -> dict:
    try:
        data = json.loads(cache_file.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):            # missing or damaged: it is only a cache
        return {}


def _save_disk_cache(cache_file: Path, data: dict) -> None:
    try:
        cache_file.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dict(list(data.items())[-MAX_CACHED_SPECS:])))
        tmp.replace(cache_file)
    except OSError:
        pass                                 # read-only data dir: parse again next time


def _parse(gguf_path: Path) -> BaseSpec:
    import gguf
    try:
        check_gguf_structure(gguf_path)
        reader = gguf.GGUFReader(str(gguf_path))
    except Exception as exc:
        raise AdapterError(f"{gguf_path} is not a readable GGUF file ({exc})") from exc

    def get(key):
        f = reader.fields.get(key)
        if f is None:
            raise AdapterError(f"{gguf_path}: missing GGUF key {key}")
        return f.contents()

    arch = get("general.architecture")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    tok_sha = hashlib.sha256("\n".join(tokens.contents()).encode()).hexdigest()[:16] if tokens else ""
    n_vocab = reader.fields.get(f"{arch}.vocab_size")
    return BaseSpec(
        architecture=arch, n_layer=int(get(f"{arch}.block_count")), n_embd=int(get(f"{arch}.embedding_length")),
        n_head=int(get(f"{arch}.attention.head_count")), n_head_kv=int(get(f"{arch}.attention.head_count_kv")),
        n_ff=int(get(f"{arch}.feed_forward_length")),
        n_vocab=int(n_vocab.contents()) if n_vocab else len(tokens.contents()), tokenizer_sha=tok_sha)
