"""The per-author ceiling (hypernet_onnx/ceiling.py) on a tiny random llama: one LoRA per author, appended to the
shared one, trained on that author's items only, scored own vs another author's."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from hypernet_onnx import ceiling
from hypernet_onnx.train import TrainConfig

CONFIG = Path(__file__).resolve().parent.parent / "hypernet_onnx/configs/tiny.toml"


def test_each_row_is_the_shared_lora_then_its_authors():
    torch.manual_seed(0)
    per = ceiling.PerAuthorLoRA(3, 2, {"q_proj": (6, 5), "gate_proj": (7, 5)}, 2)
    with torch.no_grad():
        for p in per.b.values():
            p.normal_()
    shared = {"q_proj": (torch.randn(2, 4, 5), torch.randn(2, 6, 4))}
    w = per(torch.tensor([2, 0]), shared, 2)
    a, b = w["q_proj"]                                              # (2, L, 4 + 2, in), (2, L, out, 4 + 2)
    assert torch.equal(a[0, :, :4], shared["q_proj"][0]) and torch.equal(b[1, :, :, :4], shared["q_proj"][1])
    assert torch.equal(a[0, :, 4:], per.a["q_proj"][2]) and torch.equal(b[1, :, :, 4:], per.b["q_proj"][0])
    assert torch.equal(w["gate_proj"][0], per.a["gate_proj"][[2, 0]])            # no shared part: the author's only
    alone = per(None, shared, 2)                                                  # scored without authors' LoRAs
    assert torch.equal(alone["q_proj"][0][1], shared["q_proj"][0])
    assert (alone["gate_proj"][1] == 0).all()                                     # ... so that module is unchanged


def test_untrained_authors_add_nothing_and_training_fits_their_items(sample_data, tmp_path):
    cfg = dataclasses.replace(TrainConfig.load(CONFIG), dev_data=str(sample_data))
    rec = ceiling.run(cfg, sample_data.parent, "", ["q_proj", "gate_proj"], 4, 1e-2, 1, 8, tmp_path / "c.json")
    start, end = rec["epochs"]
    for task in ("headline", "writing"):    # B starts at zero: every author's adapter is the shared one (here: none)
        assert start["nll"]["own"][task] == start["nll"]["other"][task] == start["nll"]["shared"][task]
        assert start["nll"]["shared"][task] == pytest.approx(start["nll"]["base"][task], abs=1e-5)
    assert end["nll"]["own"] != start["nll"]["own"]                    # the authors' LoRAs moved
    assert end["nll"]["shared"] == start["nll"]["shared"]              # the shared part did not
    assert json.loads((tmp_path / "c.json").read_text())["epochs"][1]["person"] == end["person"]
    assert len(end["per_example"]["own"]) == rec["config"]["eval_examples"] == len(rec["examples"])


def test_a_lora_per_request_trains_on_the_items_the_app_retrieves_for_it(embedder, tmp_path, monkeypatch):
    """--per-request: each scored request gets one LoRA trained on the author's items the app's retrieval picks for
    it and one on the next author's items picked for the same request, each posed as the request's task; the
    same items shown in the prompt are the in-context comparison."""
    from app import retrieval
    from app.models import EMBEDDER_KEY
    from app.prompts import TASKS, task_target, with_examples
    from hypernet_onnx import caches as C
    from hypernet_onnx import data as D
    from hypernet_onnx import rag_data as R
    from tests.conftest import wide_users, write_users
    monkeypatch.setattr(D, "CACHE_DIR", tmp_path / "cache")
    data = write_users(tmp_path / "wide.jsonl.gz", wide_users())
    users = D.load_users(data)
    split = C.make_split(users, C.TokenCache(tmp_path / "tokens.npz"), lambda ex: ([1, 2], 1))
    s = ceiling.per_request(users, split, data)
    assert len(s.examples) == len(users) * len(TASKS) and s.n == 2 * len(s.examples)
    assert sorted(s.own + s.other) == list(range(s.n))
    by = {u["user"]: u for u in users}
    for i, ex in enumerate(s.examples):
        q = by[ex.user]["queries"][0]
        for side, owner in (("own", by[ex.user]), ("other", by[split.shuffled[ex.user]])):
            store = R.person_store(owner, embedder, tmp_path / f"{side}-{i}.db")
            try:
                want, _ = retrieval.examples(store, EMBEDDER_KEY, embedder.embed, ex.task,
                                             retrieval.task_query(ex.task, q["title"], q["text"]), R.RAG_K)
            finally:
                store.close()
            items = [owner["profile"][int(w["path"].removeprefix("item-"))] for w in want]
            assert 0 < len(items) < len(owner["profile"])
            slot = getattr(s, side)[i]
            trained = [e for e, k in zip(s.train, s.train_slot) if k == slot]
            assert [(e.task, e.target) for e in trained] == [(ex.task, task_target(ex.task, it["title"], it["text"]))
                                                             for it in items], (side, ex.task)
            shown = s.shown[side][i]
            assert (shown.target, shown.task) == (ex.target, ex.task)
            assert shown.messages == with_examples(ex.task, ex.messages, [R.stored_item(it) for it in items])
    assert split.shuffled[s.examples[0].user] != s.examples[0].user
    headline = ceiling.per_request(users, split, data, tasks=("headline",))
    assert {e.task for e in headline.examples} == {e.task for e in headline.train} == {"headline"}


def test_per_request_run_scores_own_other_and_the_same_items_in_the_prompt(embedder, tmp_path, monkeypatch):
    from hypernet_onnx import data as D
    from tests.conftest import wide_users, write_users
    monkeypatch.setattr(D, "CACHE_DIR", tmp_path / "cache")
    data = write_users(tmp_path / "wide.jsonl.gz", wide_users())
    cfg = dataclasses.replace(TrainConfig.load(CONFIG), dev_data=str(data), dev_users=len(wide_users()))
    rec = ceiling.run(cfg, data.parent, "", ["q_proj"], 4, 1e-2, 1, 8, tmp_path / "r.json", per_req=True,
                      tasks=("headline",))
    start, end = rec["epochs"]
    assert rec["config"]["loras"] == 2 * rec["config"]["eval_examples"] == 2 * len(wide_users())
    assert start["nll"]["own"] == start["nll"]["other"] == start["nll"]["shared"]         # B = 0: nothing added
    assert end["nll"]["own"] != start["nll"]["own"] and end["nll"]["shared"] == start["nll"]["shared"]
    for k in ("rag-own", "rag-other"):             # scored once, with the items in the prompt instead
        assert end["per_example"][k] == start["per_example"][k] != start["per_example"]["shared"]
    table = ceiling.report([tmp_path / "r.json"])
    assert "| r | headline | request | 0.01 |" in table and "writing" not in table
