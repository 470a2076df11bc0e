"""The person's settings for one profile: a JSON file in its data dir, read by the CLI and the app alike.

A damaged file falls back to the defaults rather than blocking the app; unknown keys (from a newer or older
Tailor) are ignored, so the file survives upgrades in both directions.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .retrieval import DEFAULT_K
from .sandbox import EXTRACT_TIMEOUT_S


@dataclass
class Settings:
    model_path: str | None = None      # None: the bundled SmolLM2-135M-Instruct Q4_1
    hypernet_path: str | None = None   # None: assets/hypernet/hypernet.onnx
    threads: int = 0                   # 0: all cores
    gpu_layers: int = 0
    rag_k: int = DEFAULT_K
    rag: bool = False                  # "Cite my documents": passages in the prompt, listed as sources
    examples: bool = True              # a title/abstract request gets the person's nearest documents as examples
    use_adapter: bool = True
    words: bool = True                 # "My words": the person's vocabulary raised where no document is in the prompt
    scale: float = 1.0
    greedy: bool = False               # chat and ask sample (CHAT_SAMPLING) unless this is set
    seed: int | None = None            # a fixed seed makes sampled answers reproducible; None: a fresh one each
    watched: list[str] = field(default_factory=list)
    extract_timeout_s: float = EXTRACT_TIMEOUT_S   # per-file limit for reading one document (sandbox.py)

    @classmethod
    def load(cls, path: Path) -> "Settings":
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return cls()     # a damaged settings file falls back to defaults rather than blocking the app

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
