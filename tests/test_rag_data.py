"""Few-shot training examples (hypernet_onnx/rag_data.py): the app's retrieval over an author's other items,
cached by index and rebuilt from the data alone, in the prompt the app sends."""
import json

import numpy as np
import pytest

from app import retrieval
from app.models import EMBEDDER_KEY
from app.prompts import TASKS
from hypernet_onnx import data as D
from hypernet_onnx import rag_data as R
from tests.conftest import sample_users


def _wide_user() -> dict:
    """One author holding every sample document but the first (so retrieval has more items than k to choose)."""
    users = sample_users()
    items = [u["queries"][0] for u in users]
    return {"user": "wide", "profile": items[1:], "queries": items[:1]}


def test_leave_one_out_retrieval_is_the_apps_retrieval_without_the_item(embedder, tmp_path):
    u = _wide_user()
    assert len(u["profile"]) > R.RAG_K + 1
    emb = embedder.embed(D.profile_chunks(u))
    got = R.loo_retrievals(u, emb, embedder, tmp_path)
    assert set(got) == {f"{i}/{t}" for i in range(len(u["profile"])) for t in TASKS}
    assert not list(tmp_path.glob("loo-*"))                          # its working stores are gone
    for i, it in enumerate(u["profile"]):
        # what the app retrieves from a store that never held item i, embedded by the embedder itself (not the cache)
        store = R.person_store(u, embedder, tmp_path / f"fresh-{i}.db", leave_out=i)
        try:
            for t in TASKS:
                want, _ = retrieval.examples(store, EMBEDDER_KEY, embedder.embed, t,
                                             retrieval.task_query(t, it["title"], it["text"]), R.RAG_K)
                idx = got[f"{i}/{t}"]
                assert i not in idx and len(idx) == R.RAG_K
                assert idx == [int(w["path"].removeprefix("item-")) for w in want], (i, t)
                # the prompt is rebuilt from the data alone: the same words the store handed retrieval
                assert [R.stored_item(u["profile"][j]) for j in idx] == [
                    {"title": w["title"], "text": w["text"]} for w in want]
        finally:
            store.close()


def test_retrievals_are_cached_per_user_and_redone_when_the_items_change(embedder, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CACHE_DIR", tmp_path / "cache")
    users = sample_users()[:3]
    path = tmp_path / "three.jsonl.gz"
    first = R.retrievals(path, users)
    (cache,) = (tmp_path / "cache").glob("rag-*.json")
    assert len(json.loads(cache.read_text())) == 3
    monkeypatch.setattr(R, "loo_retrievals", lambda *a, **k: pytest.fail("must come from the cache"))
    assert R.retrievals(path, users) == first
    changed = [dict(users[0], profile=users[0]["profile"][:2])] + users[1:]
    monkeypatch.setattr(R, "loo_retrievals", lambda u, *a, **k: {"redone": [len(u["profile"])]})
    again = R.retrievals(path, changed)
    assert again[users[0]["user"]] == {"redone": [2]} and again[users[1]["user"]] == first[users[1]["user"]]


def test_rag_examples_pose_each_loo_example_after_its_retrieved_items():
    users = sample_users()[:2]
    chosen = {u["user"]: {f"{i}/{t}": [j for j in range(len(u["profile"])) if j != i][:1 + (t == "writing")]
                          for i in range(len(u["profile"])) for t in TASKS} for u in users}
    plain, rag = D.loo_examples(users), R.rag_loo_examples(users, chosen)
    assert [(e.profile, e.task, e.target) for e in rag] == [(e.profile, e.task, e.target) for e in plain]
    for p, r in zip(plain, rag):
        assert r.messages[-1] == p.messages[-1]                     # the request itself is unchanged
        item = int(r.profile.rsplit("loo", 1)[1])
        shown = chosen[r.user][f"{item}/{r.task}"]
        answers = [m["content"] for m in r.messages if m["role"] == "assistant"]
        assert len(answers) == len(shown) and r.target not in answers   # never its own answer
        assert r.key() != p.key()                                   # its own tokens in the token cache


def test_encode_cuts_the_examples_before_the_answer(tiny_cfg):
    """A long few-shot prompt loses its least relevant examples (first) before the answer loses a token."""
    from hypernet_onnx.frozen_base import encode, load_base
    _, tok, template, _ = load_base(tiny_cfg)
    u = _wide_user()
    chosen = {"wide": {f"{i}/{t}": [j for j in range(len(u["profile"])) if j != i][:4]
                       for i in range(len(u["profile"])) for t in TASKS}}
    ex = next(e for e in R.rag_loo_examples([u], chosen) if e.task == "writing")
    full_ids, full_n = encode(tok, template, ex, 4096)
    answer = full_ids[full_n:]
    ids, n = encode(tok, template, ex, len(answer) + (full_n * 2) // 3)
    assert ids[n:] == answer and n < full_n                      # the whole answer, a shorter prompt
    prompt = tok.decode(ids[:n])
    assert ex.messages[-1]["content"] in prompt                  # the request is whole
    assert ex.messages[-2]["content"] in prompt                  # the best example (last) is kept
    assert ex.messages[1]["content"] not in prompt               # the least relevant went first
    plain = D.Example(ex.user, ex.task, ex.messages[-1:], ex.target, ex.profile)
    assert encode(tok, template, plain, 4096)[0][-len(answer):] == answer


def test_a_request_is_put_to_all_of_the_owners_items_as_the_app_retrieves_them(embedder, tmp_path):
    """request_profiles (train.py): a query's own request profile is what the app retrieves from all the author's
    items, its shuffled twin the same request put to another author's items."""
    u = _wide_user()
    items = u["profile"] + u["queries"]
    other = {"user": "other", "profile": items[3:9], "queries": []}
    for owner in (u, other):
        got = R.request_retrievals(u, owner, embedder.embed(D.profile_chunks(owner)), embedder, tmp_path)
        assert set(got) == {f"{j}/{t}" for j in range(len(u["queries"])) for t in TASKS}
        assert not list(tmp_path.glob("request.db*"))                    # its working store is gone
        store = R.person_store(owner, embedder, tmp_path / f"fresh-{owner['user']}.db")
        try:
            for j, q in enumerate(u["queries"]):
                for t in TASKS:
                    want, _ = retrieval.examples(store, EMBEDDER_KEY, embedder.embed, t,
                                                 retrieval.task_query(t, q["title"], q["text"]), R.RAG_K)
                    assert got[f"{j}/{t}"] == [int(w["path"].removeprefix("item-")) for w in want], (owner["user"], t)
                    assert len(got[f"{j}/{t}"]) == R.RAG_K < len(owner["profile"])
        finally:
            store.close()
