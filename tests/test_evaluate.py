"""The evaluation command end to end on a two-user file made from the sample documents:
every method runs through llama.cpp + GGUF adapters and results.json has the layout issue #3 names."""
import json

import numpy as np
import pytest

from app import ingest
from hypernet_onnx import data as D
from hypernet_onnx import evaluate as E
from tests.conftest import SAMPLES, write_users


def _user(name: str, folder: str) -> dict:
    docs = [ingest.extract(p) for p in sorted((SAMPLES / folder).glob("*.md"))]
    bodies = [d.text.split("\n", 1)[1] if d.text.startswith("# ") else d.text for d in docs]   # heading = title
    items = [{"title": d.title, "text": " ".join(b.split()[:120])} for d, b in zip(docs, bodies)]
    return {"user": name, "profile": items[:-1], "queries": items[-1:]}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_users(tmp_path_factory.mktemp("evaldata") / "two.jsonl.gz",
                       [_user("perf", "interpreter-performance"), _user("pack", "packaging")])


@pytest.fixture(scope="module")
def full_run(data_file, tmp_path_factory, hypernet, spec):
    from app.lora_gguf import write_adapter
    tmp = tmp_path_factory.mktemp("evalrun")
    # any valid adapter stands in for the mt-lora one here (the shipped hypernetwork at a zero profile)
    mt = write_adapter(hypernet.generate(np.zeros(hypernet.input_dim, np.float32)), tmp / "mt.gguf", spec)
    out = tmp / "out"
    E.main(["--data", str(data_file), "--methods", ",".join(E.ALL_METHODS), "--mt-lora", str(mt),
            "--oppu-steps", "2", "--chat", "3", "--out", str(out)])
    return out


def test_evaluate_every_method(full_run, data_file):
    out = full_run
    res = json.loads((out / "results.json").read_text())
    assert res["n_users"] == 2 and set(res["methods"]) == set(E.ALL_METHODS)
    for m, v in res["methods"].items():
        for task in ("headline", "writing"):
            assert set(v[task]) == {"rouge1", "rougeL", "nll"}
            assert 0 <= v[task]["rougeL"] <= v[task]["rouge1"] + 1e-9 <= 1 + 1e-9
            assert 0 < v[task]["nll"] < 20
        assert v["sec_per_user"] >= 0
    ms = res["methods"]
    # the adapters really change the model; shuffling really swaps adapters between users
    assert ms["p2p"]["writing"]["nll"] != ms["base"]["writing"]["nll"]
    assert ms["p2p"]["writing"]["nll"] != ms["p2p-shuffled"]["writing"]["nll"]
    assert ms["oppu"]["sec_per_user"] > ms["p2p"]["sec_per_user"] > 0
    assert set(res["ci"]) == {"p2p - base", "p2p - mt-lora",       # mt-lora: the fair control
                              "p2p+rag - mt-lora+rag",             # ... and with the person's examples
                              "p2p - p2p-shuffled", "rag - rag-shuffled", "p2p+rag - p2p+rag-shuffled",
                              "p2p+words - p2p+words-shuffled", "p2p+words+knn - p2p+words+knn-shuffled"}
    # the person's words (app.words) change p2p's answers, and are the person's own (the next user's differ);
    # so do their contexts (app.knn) after the words
    for t in ("headline", "writing"):
        assert ms["p2p+words"][t]["nll"] != ms["p2p"][t]["nll"] != ms["p2p+words-shuffled"][t]["nll"]
        assert ms["p2p+words+knn"][t]["nll"] != ms["p2p+words"][t]["nll"]
        assert ms["p2p+words+knn"][t]["nll"] != ms["p2p+words+knn-shuffled"][t]["nll"]
    assert res["mt_lora"].startswith("mt.gguf sha256:")
    for t in ("headline", "writing"):
        own, shuf, base = (ms[m][t]["nll"] for m in ("p2p", "p2p-shuffled", "base"))
        assert res["person_share"][t] == (None if base <= own else pytest.approx((shuf - own) / (base - own)))
    assert "Person share" in (out / "results.md").read_text()
    rows = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == len(E.ALL_METHODS) * 2 * (1 * 2 + 3)    # methods x users x (queries x tasks + chat anchors)
    assert all(r["near_duplicate"] is False for r in rows if r["task"] != "chat") and "near_duplicates" not in res
    # the rag methods show the person's own items as examples; their shuffled twins the next user's, and
    # p2p+rag-shuffled takes the next user's adapter too (its chat rows are p2p-shuffled's)
    users = sorted({r["user"] for r in rows})
    titles = {u["user"]: {it["title"] for it in u["profile"]} for u in D.load_users(data_file)}
    for r in rows:
        if r["task"] == "chat":
            continue
        other = next(u for u in users if u != r["user"])
        shown = set(r["examples"])
        if "rag" not in r["method"]:
            assert not shown
        elif r["method"] == "mt-lora+rag":              # the shared LoRA with the person's own items
            assert shown == set(next(x["examples"] for x in rows if (x["method"], x["user"], x["task"], x["query"])
                                     == ("p2p+rag", r["user"], r["task"], r["query"])))
        else:
            assert shown and shown <= titles[other if r["method"].endswith("-shuffled") else r["user"]], r["method"]
    # chat drift: the base model's own answers scored under each method's adapter, against no adapter
    chat = {(r["method"], r["user"]): [x["nll"] for x in rows if (x["method"], x["user"], x["task"]) ==
                                       (r["method"], r["user"], "chat")] for r in rows}
    assert chat[("rag", users[0])] == chat[("base", users[0])] and res["chat"]["rag"]["drift"]["diff"] == 0
    assert res["chat"]["base"]["drift"] is None and res["chat"]["p2p"]["drift"]["diff"] != 0
    assert chat[("p2p-shuffled", users[0])] == chat[("p2p", users[1])]       # the other user's adapter, same NLLs
    assert chat[("p2p+rag-shuffled", users[0])] == chat[("p2p", users[1])]
    assert chat[("p2p", users[0])] != chat[("p2p", users[1])]
    assert chat[("p2p+words-shuffled", users[0])] == chat[("p2p+words", users[1])] != chat[("p2p", users[1])]
    assert chat[("p2p+words+knn-shuffled", users[0])] == chat[("p2p+words+knn", users[1])]
    assert chat[("mt-lora+rag", users[0])] == chat[("mt-lora", users[1])]      # one shared adapter for all
    assert res["chat"]["oppu"]["nll"] == pytest.approx(np.mean(chat[("oppu", users[0])] + chat[("oppu", users[1])]))
    assert "Everyday chat" in (out / "results.md").read_text()
    assert "| p2p |" in (out / "results.md").read_text()


def test_shards_merge_into_the_same_numbers(data_file, full_run, tmp_path):
    """Two one-user runs merged give the rows and means of the two-user run (greedy decoding is deterministic)."""
    for skip in (0, 1):
        E.main(["--data", str(data_file), "--skip", str(skip), "--users", "1", "--methods", "base,p2p", "--chat", "0",
                "--out", str(tmp_path / f"shard{skip}")])
    E.main(["--merge", str(tmp_path / "shard0"), str(tmp_path / "shard1"), "--out", str(tmp_path / "merged")])
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    full = json.loads((full_run / "results.json").read_text())
    assert merged["n_users"] == 2 and list(merged["methods"]) == ["base", "p2p"]
    for m in ("base", "p2p"):
        for task in ("headline", "writing"):
            for k in ("rouge1", "rougeL", "nll"):
                assert merged["methods"][m][task][k] == pytest.approx(full["methods"][m][task][k], abs=1e-4), (m, task, k)
    assert set(merged["ci"]) == {"p2p - base"}
    with pytest.raises(SystemExit, match="share users"):
        E.main(["--merge", str(tmp_path / "shard0"), str(tmp_path / "shard0"), "--out", str(tmp_path / "bad")])
    # the other way round: other methods on the same two users join as more rows of the same table
    E.main(["--data", str(data_file), "--methods", "p2p-shuffled", "--chat", "0", "--out", str(tmp_path / "shuf")])
    E.main(["--merge", str(tmp_path / "merged"), str(tmp_path / "shuf"), "--out", str(tmp_path / "wide")])
    wide = json.loads((tmp_path / "wide" / "results.json").read_text())
    assert list(wide["methods"]) == ["base", "p2p", "p2p-shuffled"] and wide["n_users"] == 2
    assert wide["ci"]["p2p - p2p-shuffled"]["writing"]["nll"]["diff"] == pytest.approx(
        full["ci"]["p2p - p2p-shuffled"]["writing"]["nll"]["diff"], abs=1e-4)
    # DIR:methods takes only those methods of an earlier run on the same users
    E.main(["--merge", str(tmp_path / "merged"), f"{full_run}:oppu,mt-lora", "--out", str(tmp_path / "pick")])
    pick = json.loads((tmp_path / "pick" / "results.json").read_text())
    assert list(pick["methods"]) == ["base", "p2p", "mt-lora", "oppu"]
    assert pick["methods"]["oppu"] == full["methods"]["oppu"]
    assert pick["chat"]["oppu"]["drift"] is None and "base" not in pick["chat"]   # no base anchors to pair with
    with pytest.raises(SystemExit, match="no results for"):
        E.main(["--merge", str(tmp_path / "merged"), f"{tmp_path / 'shuf'}:oppu", "--out", str(tmp_path / "bad3")])
    # a method that covers other people than the rest would make a table row about someone else
    with pytest.raises(SystemExit, match="different users"):
        E.main(["--merge", str(tmp_path / "shard0"), str(tmp_path / "shuf"), "--out", str(tmp_path / "bad2")])


def test_runs_with_different_shared_loras_do_not_merge(data_file, full_run, tmp_path, hypernet, spec):
    """mt-lora is the fair control only if every row used the same shared LoRA."""
    from app.lora_gguf import write_adapter
    other = write_adapter(hypernet.generate(np.ones(hypernet.input_dim, np.float32)), tmp_path / "other.gguf", spec)
    E.main(["--data", str(data_file), "--skip", "1", "--methods", "mt-lora+rag", "--mt-lora", str(other),
            "--nll-only", "--chat", "0", "--out", str(tmp_path / "other")])
    E.main(["--data", str(data_file), "--users", "1", "--methods", "mt-lora+rag", "--mt-lora", str(other),
            "--nll-only", "--chat", "0", "--out", str(tmp_path / "other0")])
    E.main(["--merge", str(tmp_path / "other0"), str(tmp_path / "other"), "--out", str(tmp_path / "both")])
    assert json.loads((tmp_path / "both" / "results.json").read_text())["mt_lora"].startswith("other.gguf sha256:")
    with pytest.raises(SystemExit, match="different mt-lora adapters"):
        E.main(["--merge", f"{full_run}:mt-lora+rag", str(tmp_path / "other"), "--out", str(tmp_path / "bad")])


def test_paired_bootstrap():
    rows = [{"method": m, "user": u, "query": q, "task": "headline", "nll": base + (0.5 if m == "a" else 0.0)}
            for u, base in enumerate([1.0, 2.0, 3.0, 4.0]) for q in range(2) for m in ("a", "b")]
    d = E.paired_bootstrap(rows, "a", "b", "headline", "nll")
    assert d["diff"] == pytest.approx(0.5) and d["lo"] == pytest.approx(0.5) and d["hi"] == pytest.approx(0.5)
    rows[0]["nll"] += 4.0                                       # one user's difference grows: the CI widens
    d = E.paired_bootstrap(rows, "a", "b", "headline", "nll")
    assert d["lo"] < d["diff"] < d["hi"] and d["diff"] == pytest.approx(1.0)


def test_unknown_method_is_refused(data_file, tmp_path):
    with pytest.raises(SystemExit):
        E.main(["--data", str(data_file), "--methods", "p2p,magic", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        E.main(["--data", str(data_file), "--methods", "mt-lora", "--out", str(tmp_path)])


@pytest.mark.parametrize("form", ["json", "md"])
def test_rag_rows_run_the_apps_retrieval(tailor, embedder, tmp_path, form):
    """The evaluation's rag examples for a person are exactly what the app retrieves for the same request after
    importing the same items as files (issue 14: one retrieval, measured where it runs): as JSON (title, text),
    the data's own form, and as Markdown notes opening with their title heading, which chunk the same
    (chunking.document_text; before, the first chunk kept the "# ", and its vector ranked two near-tied items the
    other way round on an AVX-512 CPU)."""
    from app import retrieval
    assert E.retrieval.examples is retrieval.examples
    user = _user("pack", "packaging")      # items as a data file holds them: a title, and a text
    folder = tmp_path / "items"
    folder.mkdir()
    for i, it in enumerate(user["profile"]):
        if form == "json":
            (folder / f"{i}.json").write_text(json.dumps({"title": it["title"], "text": it["text"]}))
        else:
            (folder / f"{i}.md").write_text(f"# {it['title']}\n\n{it['text']}\n")
    assert tailor.import_paths([folder]).imported == len(user["profile"])
    store = E.person_store(user, embedder, tmp_path / "eval.db")
    try:
        for task, q in (("writing", user["queries"][0]["title"]), ("headline", user["queries"][0]["text"])):
            ev, _ = retrieval.examples(store, E.EMBEDDER_KEY, embedder.embed, task, q, E.RAG_K)
            app, sources = tailor._examples((task, q if task == "writing" else "", q if task == "headline" else ""),
                                            E.RAG_K)
            assert [it["title"] for it in ev] == [it["title"] for it in app]
            assert len(ev) == min(E.RAG_K, len(user["profile"])) and len(sources) == len(app)
            assert [it["text"] for it in ev] == [it["text"] for it in app]     # the same words go into the prompt
    finally:
        store.close()


def test_rag_examples_are_earlier_turns_of_the_same_task():
    from app.prompts import task_messages, with_examples
    items = [{"title": "Old title", "text": "w " * 300}]
    msgs = with_examples("headline", task_messages("headline", "Q", "query abstract"), items, max_words=50)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == "Old title" and msgs[-1]["content"].endswith("query abstract")
    assert len(msgs[0]["content"].split()) < 80                      # the example abstract is clipped
    msgs = with_examples("writing", task_messages("writing", "Q", ""), items, max_words=50)
    assert "Old title" in msgs[0]["content"] and msgs[1]["content"].endswith("...")
    assert with_examples("writing", msgs[-1:], []) == msgs[-1:]


def test_nll_only_scores_the_same_nll_without_decoding(data_file, full_run, tmp_path):
    E.main(["--data", str(data_file), "--methods", "base,p2p,p2p-shuffled", "--nll-only", "--chat", "0",
            "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    full = json.loads((full_run / "results.json").read_text())
    for m in ("base", "p2p", "p2p-shuffled"):
        for task in ("headline", "writing"):
            assert res["methods"][m][task]["rougeL"] is None
            assert res["methods"][m][task]["nll"] == pytest.approx(full["methods"][m][task]["nll"], abs=1e-4)
    assert res["ci"]["p2p - p2p-shuffled"]["writing"]["rougeL"] is None
    assert res["ci"]["p2p - p2p-shuffled"]["writing"]["nll"]["diff"] == pytest.approx(
        full["ci"]["p2p - p2p-shuffled"]["writing"]["nll"]["diff"], abs=1e-4)
    assert "| p2p | – | – |" in (tmp_path / "results.md").read_text()


def test_scale_sets_the_hypernetwork_adapters_strength(data_file, tmp_path):
    """--scale is the app's strength setting: at 0 the adapter does nothing (p2p scores exactly the base model),
    and runs at different strengths do not merge into one table."""
    E.main(["--data", str(data_file), "--methods", "base,p2p", "--nll-only", "--scale", "0", "--chat", "2",
            "--out", str(tmp_path / "s0")])
    res = json.loads((tmp_path / "s0" / "results.json").read_text())
    assert res["scale"] == 0
    for task in ("headline", "writing"):
        assert res["methods"]["p2p"][task]["nll"] == pytest.approx(res["methods"]["base"][task]["nll"], abs=1e-6)
    assert res["chat"]["p2p"]["drift"]["diff"] == pytest.approx(0, abs=1e-6)       # the chat drift at that strength too
    E.main(["--data", str(data_file), "--methods", "p2p-shuffled", "--nll-only", "--chat", "0",
            "--out", str(tmp_path / "s1")])
    with pytest.raises(SystemExit, match="different adapter strengths"):
        E.main(["--merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "bad")])



def test_chat_only_scores_the_same_chat_drift_without_the_tasks(data_file, full_run, tmp_path):
    E.main(["--data", str(data_file), "--methods", "base,p2p", "--chat-only", "--chat", "2", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert all(res["methods"][m][t]["nll"] is None for m in ("base", "p2p") for t in ("headline", "writing"))
    assert res["ci"] == {} and "person_share" not in res
    rows = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    full = {(r["method"], r["user"], r["query"]): r["nll"] for r in map(json.loads, (full_run / "outputs.jsonl")
            .read_text().splitlines()) if r["task"] == "chat"}
    assert {r["task"] for r in rows} == {"chat"} and len(rows) == 2 * 2 * 2
    for r in rows:
        assert r["nll"] == pytest.approx(full[(r["method"], r["user"], r["query"])], abs=1e-4)
    assert res["chat"]["p2p"]["drift"]["diff"] != 0
    with pytest.raises(SystemExit):
        E.main(["--data", str(data_file), "--methods", "p2p", "--chat-only", "--chat", "0", "--out", str(tmp_path)])


def test_chat_drift_is_scored_at_the_apps_strength_unless_asked_for_the_full_one(data_file, tmp_path):
    """The anchors are everyday requests, so by default each is scored at the strength the app gives it
    (prompts.request_strength: a share of the setting); --chat-full scores the adapter itself. The two are
    labelled in the results and never merged into one table."""
    E.main(["--data", str(data_file), "--users", "1", "--methods", "base,p2p", "--chat-only", "--chat", "2",
            "--out", str(tmp_path / "app")])
    E.main(["--data", str(data_file), "--users", "1", "--methods", "p2p", "--chat-only", "--chat", "2", "--chat-full",
            "--out", str(tmp_path / "full")])
    app, full = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("app", "full"))
    assert (app["chat_strength"], full["chat_strength"]) == ("app", "full")
    assert full["chat"]["p2p"]["nll"] > app["chat"]["p2p"]["nll"] > app["chat"]["base"]["nll"]
    assert "at the app's strength" in (tmp_path / "app" / "results.md").read_text()
    with pytest.raises(SystemExit, match="different strengths"):
        E.main(["--merge", f"{tmp_path / 'app'}:base", str(tmp_path / "full"), "--out", str(tmp_path / "bad")])


def test_a_request_whose_paper_is_among_the_persons_items_is_a_near_duplicate():
    item = {"title": "Rewarded soups", "text": "We interpolate the weights of models fine-tuned on diverse rewards "
                                               "to reach Pareto-optimal alignment with human preferences."}
    revised = {"title": "Rewarded soups: towards Pareto-optimal alignment",
               "text": item["text"].replace("diverse rewards", "several diverse rewards")}   # another version
    other = {"title": "Graph pooling", "text": "We pool the nodes of a graph by learned clusters of their features."}
    assert D.near_duplicate(revised, [other, item]) and D.near_duplicate(item, [item])
    assert not D.near_duplicate(revised, [other]) and not D.near_duplicate({"title": "", "text": ""}, [item])


def _rows(nll: dict[tuple[str, str], float], near: set[str]) -> list[dict]:
    return [{"method": m, "user": u, "query": 0, "task": t, "rouge1": None, "rougeL": None, "nll": v + (t == "writing"),
             **({"near_duplicate": u in near} if near is not None else {})}
            for (m, u), v in nll.items() for t in ("headline", "writing")]


def test_the_person_comparisons_are_also_reported_without_near_duplicates(tmp_path):
    """A request whose paper the person's items hold in another version gets a large own-vs-shuffled gap from
    copying; evaluate reports each person comparison again without such requests (summarize), and a merge of
    runs from before the mark takes it from the data file."""
    nll = {("p2p+words", u): v for u, v in zip("abcd", (1.0, 1.1, 1.2, 0.2))}            # d: own NLL far lower,
    nll.update({("p2p+words-shuffled", u): v for u, v in zip("abcd", (1.1, 1.1, 1.3, 1.3))})   # a copy
    methods = ["p2p+words", "p2p+words-shuffled"]
    res = E.summarize(_rows(nll, {"d"}), {m: [0.0] for m in methods}, methods, 4)
    every, clean = res["ci"]["p2p+words - p2p+words-shuffled"], res["ci"]["p2p+words - p2p+words-shuffled, no near-duplicate"]
    assert res["near_duplicates"] == 1
    assert every["headline"]["nll"]["diff"] == pytest.approx((-0.1 + 0 - 0.1 - 1.1) / 4)
    assert clean["headline"]["nll"]["diff"] == pytest.approx((-0.1 + 0 - 0.1) / 3)
    assert "without the 1 requests" in E.to_markdown(res, "t")
    assert "near_duplicates" not in E.summarize(_rows(nll, set()), {m: [0.0] for m in methods}, methods, 4)

    copy = {"title": "A paper", "text": "one two three four five six seven"}
    data = write_users(tmp_path / "four.jsonl.gz", [
        {"user": u, "profile": [copy if u == "d" else {"title": "x", "text": f"{u} other words here"}],
         "queries": [copy]} for u in "abcd"])
    for name, ms in (("own", methods[:1]), ("shuffled", methods[1:])):                 # runs without the mark
        rows = [r for r in _rows(nll, None) if r["method"] in ms]
        res = E.summarize(rows, {m: [0.0] for m in ms}, ms, 4)
        res.update(data=data.name, hypernet="h", scale=1.0, wall_s=1.0)
        E.write_results(tmp_path / name, res, rows)
    merged, _ = E.merge([tmp_path / "own", tmp_path / "shuffled"], data)
    assert merged["near_duplicates"] == 1
    assert merged["ci"]["p2p+words - p2p+words-shuffled, no near-duplicate"] == clean
    with pytest.raises(SystemExit, match="data file"):
        E.merge([tmp_path / "own", tmp_path / "shuffled"], tmp_path / "missing.jsonl.gz")
