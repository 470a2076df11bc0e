"""Shared fixtures. Real models throughout; the user data dir points at a tmpdir (TAILOR_HOME)."""
import os
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# no test may touch the person's real data dir, even through a session fixture without `home`
os.environ["TAILOR_HOME"] = tempfile.mkdtemp(prefix="tailor-tests-")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "assets" / "samples"
BASE_GGUF = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "tailor-home"
    monkeypatch.setenv("TAILOR_HOME", str(h))
    return h


@pytest.fixture(scope="session")
def spec():
    from app.lora_gguf import read_base_spec
    return read_base_spec(BASE_GGUF)


@pytest.fixture(scope="session")
def engine():
    """One base model for the whole session: hot swap is what the app does too."""
    from app.engine import Engine
    return Engine(BASE_GGUF, n_ctx=1024)


@pytest.fixture(scope="session")
def hypernet(spec):
    from app.hypernet import Hypernet
    return Hypernet(None, spec)


@pytest.fixture(scope="session")
def embedder():
    from app.embed import Embedder
    return Embedder()


@pytest.fixture
def tailor(home, embedder, hypernet, spec):
    """A core on a fresh data dir that reuses the session's models (no reloads)."""
    from app.core import Tailor
    t = Tailor(home)
    t._embedder, t._hypernet, t._spec = embedder, hypernet, spec
    yield t
    t.close()


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly on any socket connect or DNS lookup."""
    def deny(*a, **k):
        raise AssertionError(f"network access attempted: {a!r}")
    monkeypatch.setattr(socket.socket, "connect", deny)
    monkeypatch.setattr(socket.socket, "connect_ex", deny)
    monkeypatch.setattr(socket, "getaddrinfo", deny)
    monkeypatch.setattr(socket, "create_connection", deny)
