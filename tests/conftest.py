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
os.environ["TAILOR_CONFIG"] = tempfile.mkdtemp(prefix="tailor-tests-config-")   # nor its data-dir setting

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "assets" / "samples"
BASE_GGUF = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def sample_users() -> list[dict]:
    """Users in the format of ../shared/data (README there), made from the public-domain sample documents,
    so training and evaluation tests need nothing outside the repository: user i asks about document i with
    the three documents after it as their profile."""
    from app import ingest
    docs = [ingest.extract(p) for p in sorted(SAMPLES.glob("*/*.md"))]
    items = [{"id": f"doc{i}", "title": d.title, "text": " ".join(d.text.split()[:120])} for i, d in enumerate(docs)]
    return [{"user": f"sample-{i}", "domain": "peps",
             "profile": [items[(i + j) % len(items)] for j in (1, 2, 3)], "queries": [items[i]]}
            for i in range(len(items))]


def wide_users() -> list[dict]:
    """The sample users with seven profile items each, so retrieval (k = 4) picks a strict subset of them."""
    users = sample_users()
    items = [u["queries"][0] for u in users]
    return [dict(u, profile=[items[(i + j) % len(items)] for j in range(1, 8)]) for i, u in enumerate(users)]


def write_users(path: Path, users: list[dict]) -> Path:
    import gzip
    import json
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for u in users:
            f.write(json.dumps(u) + "\n")
    return path


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """sample_users() as a .jsonl.gz file."""
    return write_users(tmp_path_factory.mktemp("sample-data") / "samples.jsonl.gz", sample_users())


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory, sample_data):
    """configs/tiny.toml (a tiny random llama) on the sample users (an absolute data path is used as it is, not
    under ../shared/data)."""
    import dataclasses
    from hypernet_onnx.train import TrainConfig
    cfg = TrainConfig.load(REPO / "hypernet_onnx/configs/tiny.toml")
    return dataclasses.replace(cfg, out_dir=str(tmp_path_factory.mktemp("tiny")), train_data=str(sample_data),
                               dev_data=str(sample_data))


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "tailor-home"
    monkeypatch.setenv("TAILOR_HOME", str(h))
    return h


@pytest.fixture(scope="session")
def spec():
    from app.base_model import read_base_spec
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
