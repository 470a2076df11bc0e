"""app.words without the models: which head the app takes, and what a profile's counts become."""
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from app.words import WORDS_FILE, WordsHead


def _head(vocab: int = 50, hypernet_id: str = "hn-1", max_total: float = 1e6) -> WordsHead:
    rng = np.random.default_rng(0)
    return WordsHead(w=0.3, w1=rng.normal(size=(8, 4)), b1=rng.normal(size=4), w2=rng.normal(size=4), b2=0.1,
                     log_bg=np.log(rng.dirichlet(np.ones(vocab))), max_total=max_total, hypernet_id=hypernet_id)


def test_the_head_is_taken_only_beside_the_hypernetwork_it_was_trained_with(tmp_path, caplog):
    hypernet = SimpleNamespace(path=tmp_path / "hypernet.onnx", id="hn-1")
    assert WordsHead.beside(hypernet) is None                                   # none shipped: answers without
    _head(hypernet_id="hn-1").save(tmp_path / WORDS_FILE)
    got = WordsHead.beside(hypernet)
    assert got is not None and got.hypernet_id == "hn-1" and len(got.log_bg) == 50
    assert WordsHead.beside(SimpleNamespace(path=hypernet.path, id="hn-2")) is None   # another one's adapters
    whole = (tmp_path / WORDS_FILE).read_bytes()
    for damaged in (b"not a numpy archive", whole[:len(whole) // 2]):           # garbage, a file cut short
        (tmp_path / WORDS_FILE).write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tailor"):
            assert WordsHead.beside(hypernet) is None                           # a warning, answers without
        assert "cannot be read" in caplog.text


def test_a_profiles_counts_become_its_tokens_features():
    head = _head()
    words = head.profile([[3, 3, 7, 99], [7, 8], []])      # 99: outside the vocabulary; an empty document
    assert words.support.tolist() == [3, 7, 8]
    f = words.f
    assert f[:, 4].tolist() == pytest.approx([0.5, 1.0, 0.5])                  # share of the two documents
    assert f[:, 5] == pytest.approx(np.log(5) / 8)                             # five counted tokens
    pmi = np.log(np.array([2, 2, 1]) / 5) - head.log_bg[[3, 7, 8]]
    assert f[:, 1] == pytest.approx(pmi / 5) and f[:, 0] == pytest.approx(np.clip(pmi, 0, 5))
    logits = np.random.default_rng(1).normal(size=50).astype(np.float32)
    moved = words.processor(1.0)(np.array([3]), logits) - logits
    assert (moved[[3, 7, 8]] != 0).all() and np.count_nonzero(moved) == 3      # only the person's tokens
    assert (words.processor(0.0)(np.array([3]), logits) == logits).all()


def test_a_head_with_follow_features_raises_what_follows_the_tokens_before_in_the_documents():
    rng = np.random.default_rng(2)
    head = WordsHead(**{**_head().__dict__, "w1": rng.normal(size=(12, 4))})    # trained with pairs and triples
    assert head.orders == (2, 3) and _head().orders == ()
    words = head.profile([[3, 3, 7], [7, 8, 3, 7]])       # pairs (3,3) (3,7) (7,8) (8,3) (3,7); triples 337 783 837
    at, f = words.follows([3])
    assert words.support[at].tolist() == [3, 7]
    assert f[:, 0] == pytest.approx(np.log1p([1, 2]) / 3) and f[:, 1] == pytest.approx([1 / 3, 2 / 3])
    assert len(words.follows([7])[0]) == 1 and len(words.follows([5])[0]) == 0   # 5: never written
    at, f = words.follows([8, 3])
    assert words.support[at].tolist() == [7] and f[:, 1] == pytest.approx([1.0])
    assert len(words.follows([3, 8])[0]) == 0
    logits = rng.normal(size=50).astype(np.float32)
    step = words.processor(1.0)
    after_3, after_5 = step(np.array([9, 3]), logits), step(np.array([9, 5]), logits)
    assert np.flatnonzero(after_3 != after_5).tolist() == [3, 7]   # only what follows 3 in the documents moves
    after_83 = step(np.array([8, 3]), logits)
    assert np.flatnonzero(after_83 != after_3).tolist() == [7]     # and what follows 8 3
    assert (step(np.array([3]), logits) == after_3).all()          # one token before: no triple to read
    with pytest.raises(ValueError, match="not one"):
        WordsHead(**{**_head().__dict__, "w1": rng.normal(size=(9, 4))})     # half a feature pair: damaged
