"""Where Tailor keeps things.

User data (documents, database, adapters) lives in one data directory, found
the same way by the CLI and the app: $TAILOR_HOME when set (tests point it at
a tmpdir), else the directory chosen in the app's Settings (recorded in the
config dir, so `tailor wipe` acts on the same data the app shows), else the
platform's user-data dir. Models live in
the repository's ``models/`` (filled by ``make``), beside a frozen bundle's
executable, or in $TAILOR_MODELS.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import platformdirs

from .log import log

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_FILE = "location.json"
PROFILES_DIR = "profiles"          # <data dir>/profiles/<name>: one more person's documents, adapters, chats
LAST_PROFILE_FILE = "last-profile"   # in the data dir: the profile the app reopens on
DEFAULT_PROFILE = "default"        # lives in the data dir itself (so data from before profiles stays where it was)
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def config_dir() -> Path:
    """Where the data-directory choice is recorded: outside the data dir, which it points to."""
    env = os.environ.get("TAILOR_CONFIG")
    return Path(env).expanduser() if env else Path(platformdirs.user_config_dir("tailor", appauthor=False))


def chosen_data_dir() -> Path | None:
    """The data directory chosen in Settings, if any."""
    try:
        value = json.loads((config_dir() / DATA_DIR_FILE).read_text()).get("data_dir")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise OSError(f"cannot read the data-directory setting {config_dir() / DATA_DIR_FILE}: {exc}; "
                      "fix or delete that file") from exc
    return Path(value).expanduser() if value else None


def choose_data_dir(path: Path | None) -> None:
    """Record the data directory that the CLI and the app use from now on (None: the platform default)."""
    d = ensure_private_dir(config_dir())
    tmp = d / (DATA_DIR_FILE + ".tmp")
    tmp.write_text(json.dumps({"data_dir": str(Path(path).expanduser().absolute()) if path else None}))
    tmp.replace(d / DATA_DIR_FILE)


def data_dir() -> Path:
    home = os.environ.get("TAILOR_HOME")
    chosen = None if home else chosen_data_dir()
    path = Path(home).expanduser() if home else (chosen or Path(platformdirs.user_data_dir("tailor", appauthor=False)))
    if path.exists() and not path.is_dir():     # mkdir's bare "[Errno 17] File exists" does not say what to do
        source = ("TAILOR_HOME" if home else f"the data-directory setting {config_dir() / DATA_DIR_FILE}" if chosen
                  else "the platform's data folder")
        raise NotADirectoryError(f"the data folder {path} (from {source}) is a file, not a folder: "
                                 "point it at a folder, or move the file away")
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


# --- profiles ---------------------------------------------------------------------------------------------
class ProfileError(ValueError):
    """A profile name that cannot be used, or one that does not exist; a message for the person."""


def check_profile_name(name: str) -> str:
    if not _PROFILE_NAME.match(name or ""):
        raise ProfileError(f"profile name {name!r}: use 1-40 letters, digits, '-' or '_', starting with a letter "
                           "or digit")
    return name


def profile_names(root: Path | None = None) -> list[str]:
    """The default profile, then the named ones; ``root``: the data dir (default: ``data_dir()``)."""
    root = (root or data_dir()) / PROFILES_DIR
    named = sorted(p.name for p in root.iterdir() if p.is_dir() and _PROFILE_NAME.match(p.name)) \
        if root.is_dir() else []
    return [DEFAULT_PROFILE] + [n for n in named if n != DEFAULT_PROFILE]


def last_profile(root: Path) -> str:
    """The profile the app was last on, so it reopens there; the default one if that is gone or unreadable.
    (The CLI does not follow it: `tailor` acts on the default profile unless `--profile` names another.)"""
    try:
        name = (root / LAST_PROFILE_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError):
        return DEFAULT_PROFILE
    return name if name in profile_names(root) else DEFAULT_PROFILE


def remember_profile(root: Path, name: str) -> None:
    tmp = root / (LAST_PROFILE_FILE + ".tmp")
    try:
        tmp.write_text(check_profile_name(name), encoding="utf-8")
        tmp.replace(root / LAST_PROFILE_FILE)
    except OSError as exc:      # a read-only data dir: the app opens on the default profile next time
        log.warning("could not remember the profile %s: %s", name, exc)


def profile_home(name: str | None = None, create: bool = False, root: Path | None = None) -> Path:
    """The data dir of one profile: the data dir itself for the default one. A named profile must exist unless
    ``create``: a mistyped name is an error, not a new empty profile that quietly answers without the person."""
    root = root or data_dir()
    if not name or name == DEFAULT_PROFILE:
        return root
    path = root / PROFILES_DIR / check_profile_name(name)
    if not path.is_dir():
        if not create:
            raise ProfileError(f"no profile {name!r} (profiles: {', '.join(profile_names(root))}); "
                               f"create it with: tailor profiles create {name}")
        ensure_private_dir(path)
    return path


def delete_profile(name: str) -> Path:
    if not name or name == DEFAULT_PROFILE:
        raise ProfileError("the default profile is not deleted this way; `tailor wipe` empties it")
    path = profile_home(name)
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise ProfileError(f"could not delete everything in {path}; delete what is left by hand")
    return path
