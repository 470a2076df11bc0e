"""The adapter files of a profile: what an adapt produced, their directory kept clean, and export for other tools.

The store registers each adapter (version, profile fingerprint, the documents it came from); this module owns
the files beside it. A file is written fully before it is registered and unregistered before it is deleted, so
a crash leaves at most a stray file, which the next start sweeps away.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .engine import Sampling
from .log import log
from .lora_gguf import LoraAdapter, read_adapter, write_adapter
from .store import Store

KEEP_ADAPTERS = 5        # versions kept on disk per profile (older ones are deleted after each adapt)


@dataclass(frozen=True)
class AdaptResult:
    version: int
    path: str
    ms: dict[str, float]          # embed, hypernet, write, load, total

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ForgetResult:
    forgotten: str                             # the document's path
    adapters_deleted: list[int]                # versions made from it, deleted with it
    adapter: AdaptResult | None = None         # the adapter regenerated from what remains, if any

    def as_dict(self) -> dict:
        out = {"forgotten": self.forgotten, "adapters_deleted": self.adapters_deleted}
        if self.adapter is not None:
            out["adapter"] = self.adapter.as_dict()
        return out


def new_adapter_path(adapter_dir: Path) -> Path:
    return adapter_dir / f"adapter-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.gguf"


def sweep(store: Store, adapter_dir: Path, min_age_s: float = 300.0) -> None:
    """Delete what a killed process left in the adapter dir: half-written temp files and adapter files that
    are not registered (written but never registered, or unregistered but not yet unlinked). Files
    younger than ``min_age_s`` are left alone: another process may be writing them right now."""
    known = {Path(a["path"]).name for a in store.adapters()}
    now = time.time()
    for p in adapter_dir.iterdir():
        try:
            if p.name in known or now - p.stat().st_mtime < min_age_s:
                continue
            if p.name.endswith(".tmp") or (p.name.startswith("adapter-") and p.suffix == ".gguf"):
                p.unlink()
                log.info("removed leftover adapter file %s", p.name)
        except OSError as exc:
            log.warning("could not sweep %s: %s", p, exc)


def delete(store: Store, a: dict) -> None:
    store.delete_adapter(a["version"])
    Path(a["path"]).unlink(missing_ok=True)


def chat_template(base: Path) -> str:
    """The chat template stored in the base GGUF (what llama.cpp renders prompts with), without loading it."""
    import gguf
    f = gguf.GGUFReader(str(base)).fields.get("tokenizer.chat_template")
    return f.contents() if f is not None else ""


def export(latest: dict, spec, base: Path, dest: Path, scale: float, sampling: Sampling) -> dict:
    """The adapter ``latest`` for use outside Tailor: a GGUF LoRA that llama.cpp (``--lora``), llama-cpp-python
    (``Llama(lora_path=...)``) and Ollama (``ADAPTER``) load, with the strength folded into its alpha (Ollama
    has no strength setting), and an Ollama Modelfile naming the base model it was made for, with the base
    model's own chat template when it is ChatML and Tailor's decoding defaults."""
    dest.mkdir(parents=True, exist_ok=True)
    ad = read_adapter(Path(latest["path"]), spec)
    adapter = dest / f"tailor-adapter-v{latest['version']}.gguf"
    write_adapter(LoraAdapter(ad.weights, ad.alpha * scale, {**ad.metadata, "exported_scale": str(scale)}),
                  adapter, spec)
    lines = ["# Tailor's personalized model for Ollama:  ollama create tailor -f Modelfile && ollama run tailor",
             f"FROM {base}", f"ADAPTER ./{adapter.name}"]
    if "<|im_start|>" in chat_template(base):       # ChatML (the bundled model); Ollama cannot run jinja
        lines += ['TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
                  '{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n'
                  '{{ .Response }}<|im_end|>\n"""', 'PARAMETER stop "<|im_end|>"']
    lines += [f"PARAMETER temperature {sampling.temperature}", f"PARAMETER repeat_penalty {sampling.repeat_penalty}",
              f"PARAMETER min_p {sampling.min_p}"]
    modelfile = dest / "Modelfile"
    modelfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"adapter": str(adapter), "version": latest["version"], "scale": scale, "base_model": str(base),
            "modelfile": str(modelfile),
            "llama_cpp": f"llama-cli -m {base} --lora {adapter}",
            "python": f"Llama(model_path={str(base)!r}, lora_path={str(adapter)!r})"}
