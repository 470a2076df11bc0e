"""Crash safety (issue #5, promise 3): a process doing import and adaptation, SIGKILLed at random moments
(>= 20 trials, fresh and reused data directories, a corpus that changes between trials), always leaves a
database that passes PRAGMA integrity_check (and the FTS index its own integrity check), every registered
adapter loadable, and an import that completes when run again.

The child is the real core in a real process; only the base model's shape description is handed to it
pickled, because reading it from the 100 MB GGUF takes seconds and has nothing to do with crashes.
"""
from __future__ import annotations

import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.core import Tailor
from app.lora_gguf import read_adapter
from tests.conftest import REPO

TRIALS = 22

CHILD = r"""
import pickle, random, sys
from pathlib import Path
from app.core import Tailor
home, corpus, spec_file, seed = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
print("start", flush=True)
t = Tailor(home)
with open(spec_file, "rb") as f:
    t._spec = pickle.load(f)
t.embedder, t.hypernet
print("ready", flush=True)
rng = random.Random(seed)
for _ in range(100):
    t.import_paths([corpus])
    print("imported", flush=True)
    t.adapt()
    print("adapted", flush=True)
    ok = [d for d in t.docs() if d["status"] == "ok"]
    if ok and rng.random() < 0.5:
        t.forget(str(rng.choice(ok)["id"]))
        print("forgot", flush=True)
print("finished", flush=True)
"""

VOCAB = [a + b + c for a in ("bra", "sto", "qui", "fen", "lo", "mar", "dri", "ska")
         for b in ("ve", "ndo", "ri", "mpa", "sh", "lu") for c in ("", "n", "ter", "ling", "s")]


def random_doc(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(6, 30)):
        words = rng.choices(VOCAB, k=rng.randint(6, 18))
        sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
    return " ".join(sentences)


def mutate_corpus(corpus: Path, rng: random.Random) -> None:
    files = sorted(corpus.glob("*.txt"))
    action = rng.choice(["rewrite", "rewrite", "add", "delete", "none"])
    if action == "rewrite" and files:
        rng.choice(files).write_text(random_doc(rng))
    elif action == "add" or not files:
        (corpus / f"note-{rng.randrange(10**6)}.txt").write_text(random_doc(rng))
    elif action == "delete" and len(files) > 2:
        rng.choice(files).unlink()


def check_home(home: Path, spec) -> dict:
    """What must hold after any crash."""
    db = home / "tailor.db"
    if not db.exists():
        return {"adapters": 0}
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "chunks_fts" in tables:
            con.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES('integrity-check', 1)")
        registered = [r[0] for r in con.execute("SELECT path FROM adapters ORDER BY version DESC")] \
            if "adapters" in tables else []
    finally:
        con.close()
    for path in registered:                          # the last good adapter (and every other kept one) loads
        assert Path(path).is_file(), f"registered adapter {path} is missing"
        read_adapter(Path(path), spec)
    return {"adapters": len(registered)}


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts(tmp_path, spec, embedder, hypernet):
    rng = random.Random(20240605)
    spec_file = tmp_path / "spec.pkl"
    spec_file.write_bytes(pickle.dumps(spec))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(5):
        (corpus / f"note-{i}.txt").write_text(random_doc(rng))
    home = tmp_path / "home-0"
    phases: dict[str, int] = {}
    t_start = time.monotonic()

    for trial in range(TRIALS):
        if trial and rng.random() < 0.25:
            home = tmp_path / f"home-{trial}"               # a fresh data directory now and then
        mutate_corpus(corpus, rng)
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(home), str(corpus), str(spec_file),
                                 str(trial)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        ready = threading.Event()

        def read_stdout(p=proc, out=lines, ev=ready):
            for line in p.stdout:
                out.append(line.strip())
                if line.strip() == "ready":
                    ev.set()
            ev.set()
        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.8))               # during start-up: opening, migrating
        else:
            assert ready.wait(60), "child never got ready"
            time.sleep(rng.uniform(0.0, 1.6))               # during import / embedding / adapt / forget
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        reader.join(10)
        err = proc.stderr.read()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, lines, err[-2000:])
        phase = lines[-1] if lines else "spawned"
        phases[phase] = phases.get(phase, 0) + 1

        state = check_home(home, spec)
        # a re-run of the import (and the adaptation) completes on what the crash left behind
        t = Tailor(home)
        t._embedder, t._hypernet, t._spec = embedder, hypernet, spec
        try:
            summary = t.import_paths([corpus])
            assert not summary.failed, summary.failed
            assert t.store.integrity() == "ok"
            ok = {d["path"] for d in t.docs() if d["status"] in ("ok", "duplicate")}
            assert {str(p) for p in corpus.glob("*.txt")} <= ok
            t.adapt()
        finally:
            t.close()
        after = check_home(home, spec)
        assert after["adapters"] >= 1 and after["adapters"] >= min(state["adapters"], 5)

    print(f"\n{TRIALS} kills in {time.monotonic() - t_start:.0f} s; last phase reached: {phases}")
    assert sum(phases.values()) == TRIALS
