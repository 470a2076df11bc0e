"""The base model's spec: parsed once per file version, kept on disk only where the caller says."""
import json
import os
import shutil
import subprocess
import sys

from app import base_model as B
from tests.conftest import BASE_GGUF, REPO


def test_base_spec_is_parsed_once_per_file_version(tmp_path, monkeypatch, spec):
    model = tmp_path / "base.gguf"
    shutil.copyfile(BASE_GGUF, model)
    cache = tmp_path / "cache" / "gguf-specs.json"
    parses = []
    real = B._parse
    monkeypatch.setattr(B, "_parse", lambda p: parses.append(p) or real(p))
    monkeypatch.setattr(B, "_SPEC_CACHE", {})
    assert B.read_base_spec(model, cache) == spec and len(parses) == 1
    B._SPEC_CACHE.clear()                           # a new process: the disk cache answers
    assert B.read_base_spec(model, cache) == spec and len(parses) == 1
    os.utime(model, ns=(1, 1))                      # the file changed: parsed again
    B._SPEC_CACHE.clear()
    assert B.read_base_spec(model, cache) == spec and len(parses) == 2
    cache.write_text(cache.read_text().replace('"n_layer": 30', '"n_layer": "30"'))   # damaged entry
    B._SPEC_CACHE.clear()
    assert B.read_base_spec(model, cache) == spec and len(parses) == 3
    cache.write_text("{not json")
    B._SPEC_CACHE.clear()
    assert B.read_base_spec(model, cache) == spec and len(parses) == 4
    B._SPEC_CACHE.clear()                           # a cache that cannot be written: parsed, not an error
    assert B.read_base_spec(model, tmp_path / "missing" / "dir" / "specs.json") == spec and len(parses) == 5


def test_without_a_cache_file_nothing_is_written_and_the_data_dir_is_not_known(tmp_path):
    """Training, evaluation and tests have no data dir: the spec layer must not find one for them."""
    home = tmp_path / "tailor-home"
    code = ("import sys\nfrom pathlib import Path\nfrom app.base_model import read_base_spec\n"
            f"read_base_spec(Path({str(BASE_GGUF)!r}))\nprint('app.paths' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TAILOR_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert not home.exists()


def test_the_core_keeps_its_spec_cache_in_its_data_dir(home, monkeypatch, spec):
    from app.core import Tailor
    monkeypatch.setattr(B, "_SPEC_CACHE", {})       # as in a fresh process
    t = Tailor(home)
    try:
        assert t.spec == spec
    finally:
        t.close()
    cached = json.loads((home / "cache" / "gguf-specs.json").read_text())
    assert list(cached.values()) == [{**spec.__dict__}]


def test_an_engine_keeps_to_its_threads_in_prompt_processing_too():
    """--threads 1 runs side by side must not each take every core while scoring prompts (NLL is all prompt)."""
    from app.engine import Engine
    from tests.conftest import BASE_GGUF
    e = Engine(BASE_GGUF, n_ctx=256, n_threads=1)
    assert e.llm.context_params.n_threads == e.llm.context_params.n_threads_batch == 1
