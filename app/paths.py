"""Where Tailor keeps things.

User data (documents, database, adapters) lives in the platform's user-data
dir, or in $TAILOR_HOME when set (tests point it at a tmpdir). Models live in
the repository's ``models/`` (filled by ``make``), beside a frozen bundle's
executable, or in $TAILOR_MODELS.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

REPO_ROOT = Path(__file__).resolve().parent.parent


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def data_dir() -> Path:
    home = os.environ.get("TAILOR_HOME")
    path = Path(home).expanduser() if home else Path(platformdirs.user_data_dir("tailor", appauthor=False))
    return ensure_private_dir(path)


def models_dir() -> Path:
    env = os.environ.get("TAILOR_MODELS")
    if env:
        return Path(env).expanduser()
    if getattr(sys, "frozen", False):  # PyInstaller bundle: models sit beside the executable's internals
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "models"
    return REPO_ROOT / "models"


def assets_dir() -> Path:
    if getattr(sys, "frozen", False):
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "assets"
    return REPO_ROOT / "assets"


def file_version(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): the key under which facts derived from a file (its hash, a parsed
    header) are cached, so a replaced or edited file is read again. Raises OSError if it cannot be stat'ed."""
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns
