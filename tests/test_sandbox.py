"""The extraction worker's replies are data (JSON), never code: a worker taken over by a parser exploit
cannot make the app run anything by what it sends back."""
import pickle
from multiprocessing import Pipe
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.ingest import IngestError
from app.sandbox import Extractor


def _fake_worker(reply: bytes):
    app_rd, worker_wr = Pipe(duplex=False)
    worker_rd, app_wr = Pipe(duplex=False)
    worker_wr.send_bytes(reply)
    return SimpleNamespace(rd=app_rd, wr=app_wr, alive=lambda: True, kill=lambda: None, join=lambda t: None,
                           close_pipes=lambda: None, exitcode=None, pid=0, _keep=(worker_rd, worker_wr))


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):             # what a hostile worker would send: "touch this file" on unpickling
        return (Path.touch, (self.marker,))


def test_a_pickled_reply_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    ex = Extractor()
    ex._worker = _fake_worker(pickle.dumps(("ok", _Payload(marker))))
    with pytest.raises(IngestError):
        ex.extract(tmp_path / "any.txt")
    assert not marker.exists()


@pytest.mark.parametrize("reply", [b'{"ok": {"title": 1, "text": "x"}}', b'{"ok": "x"}', b'["ok", "x"]',
                                   b'{"error": "bad", "ok": {"title": "", "text": ""}}'])
def test_a_malformed_reply_fails_the_file_cleanly(tmp_path, reply):
    ex = Extractor()
    ex._worker = _fake_worker(reply)
    with pytest.raises(IngestError, match="malformed"):
        ex.extract(tmp_path / "any.txt")


def test_real_worker_round_trip(tmp_path):
    f = tmp_path / "note.md"
    f.write_text("# A title\n\nSome text with a lone \\ud800 escape and ünïcode.\n")
    ex = Extractor()
    try:
        doc = ex.extract(f)
        assert doc.title == "A title" and "ünïcode" in doc.text
        with pytest.raises(IngestError):
            ex.extract(tmp_path / "missing.md")
    finally:
        ex.close()
