"""app.knn, the person's contexts: the mixture against its definition, llama.cpp's hidden states against torch's,
and the core building, caching and applying them."""
import numpy as np
import pytest

from tests.conftest import BASE_GGUF, SAMPLES


def _cfg(**kw):
    from app.knn import KnnConfig
    return KnnConfig(**({"k": 8, "T": 3.0, "lam": 0.3, "gate": 1e9, "hypernet_id": "x"} | kw))


def test_the_mixture_is_the_definition_read_by_brute_force():
    """lambda p_knn + (1 - lambda) p with p_knn the softmax(-d^2 / T) vote of the k nearest keys, checked against
    every key's distance and a dense vote; the gate leaves the logits as they are where the nearest key is
    farther than it; the processor runs the words' bias first."""
    from app.knn import Contexts
    rng = np.random.default_rng(0)
    V, C = 10, 8
    keys, values = rng.normal(size=(200, C)).astype(np.float32), rng.integers(0, V, 200).astype(np.int32)
    ctx = Contexts(keys, values, _cfg())
    for _ in range(5):
        h, logits = rng.normal(size=C).astype(np.float32), rng.normal(0, 2, V).astype(np.float32)
        d = ((keys - h) ** 2).sum(1)
        near = np.argsort(d)[:8]
        w = np.exp(-d[near] / 3.0)
        p_knn = np.zeros(V)
        np.add.at(p_knn, values[near], w / w.sum())
        p = np.exp(logits - logits.max())
        p /= p.sum()
        np.testing.assert_allclose(np.exp(ctx.mix(h, logits)), 0.3 * p_knn + 0.7 * p, rtol=1e-4, atol=1e-6)
        dist, vals = ctx.nearest(h)
        np.testing.assert_allclose(dist, d[near], rtol=1e-4, atol=1e-4)
        assert (vals == values[near]).all()
    far = Contexts(keys, values, _cfg(gate=float(d.min()) - 1e-3))           # the last h's nearest is beyond it
    assert far.mix(h, logits) is logits
    one = Contexts(keys[:3], values[:3], _cfg(lam=1.0))                       # fewer keys than k: all of them vote
    assert np.isclose(np.exp(one.mix(h, logits))[values[:3]].sum(), 1.0, atol=1e-5)

    seen = []
    words = lambda ids, lg: (seen.append(list(ids)), lg + np.eye(V, dtype=np.float32)[0] * 5)[1]   # noqa: E731
    step = ctx.processor(words)
    assert step.needs_hidden
    np.testing.assert_allclose(step(np.array([4, 2]), logits, h), ctx.mix(h, logits + np.eye(V)[0] * 5), rtol=1e-5)
    assert seen == [[4, 2]]


def test_the_grid_point_is_taken_only_beside_its_hypernetwork(tmp_path, caplog, hypernet):
    import json
    from types import SimpleNamespace
    from app.knn import KNN_FILE, KnnConfig
    shipped = KnnConfig.beside(hypernet)
    assert shipped is not None and shipped.hypernet_id == hypernet.id                # the shipped one is read
    fake = SimpleNamespace(path=tmp_path / "hypernet.onnx", id="other")
    good = {"k": 16, "T": 100.0, "lam": 0.05, "gate": 500.0, "hypernet_id": "other"}
    (tmp_path / KNN_FILE).write_text(json.dumps(good))
    assert KnnConfig.beside(fake) == KnnConfig(16, 100.0, 0.05, 500.0, "other")
    (tmp_path / KNN_FILE).write_text(json.dumps(good | {"hypernet_id": "small-s1000-0"}))
    assert KnnConfig.beside(fake) is None                                        # chosen with another one
    for broken in ('{"k": 16', json.dumps(good | {"lam": 2.0}), json.dumps({"k": 1})):
        (tmp_path / KNN_FILE).write_text(broken)
        assert KnnConfig.beside(fake) is None
    assert "cannot be read" in caplog.text and "out of range" in caplog.text


@pytest.fixture(scope="module")
def scorer():
    from app.engine import Engine
    return Engine(BASE_GGUF, n_ctx=512, logits_all=True)


def test_llamacpp_hidden_states_are_torchs_last_hidden_state(scorer):
    """Engine.hidden_states reads llama.cpp's per-token embedding (embeddings switched on for the answer only):
    the base model's last hidden state after the final norm, as torch computes it from the same GGUF (Q4_1
    dequantized, so not bit-equal), and what the logits are made from."""
    import torch
    from transformers import AutoModelForCausalLM
    prompt = scorer.tokenize(scorer.chat_prompt([{"role": "user", "content": "Write a short title for a paper."}]))
    target = scorer.tokenize("Faster Python calls by caching method lookups", special=False)
    hidden, logits = scorer.hidden_states(prompt, target)
    assert hidden.shape == (len(target), scorer.spec.n_embd) and logits.shape == (len(target), scorer.llm.n_vocab())
    np.testing.assert_allclose(logits, scorer.logits(prompt + target)[len(prompt) - 1:-1], atol=1e-3)
    model = AutoModelForCausalLM.from_pretrained(BASE_GGUF.parent, gguf_file=BASE_GGUF.name,
                                                 dtype=torch.float32).eval()
    with torch.no_grad():
        want = model.model(torch.tensor([prompt + target])).last_hidden_state[0, len(prompt) - 1:-1].numpy()
        head = model.lm_head.weight.numpy()
    d = ((hidden - want) ** 2).sum(1)
    assert np.median(d) < 0.02 * np.median((want ** 2).sum(1)), (np.median(d), np.median((want ** 2).sum(1)))
    cos = (hidden * want).sum(1) / np.linalg.norm(hidden, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.98
    assert ((hidden @ head.T).argmax(1) == logits.argmax(1)).mean() > 0.9     # the logits are read from it


def test_each_decoding_step_sees_its_own_hidden_state(scorer):
    """A bias with needs_hidden gets, at every step of a streamed answer, the hidden state hidden_states gives
    that position; switching embeddings on for it changes no token, and the NLL gets the same states."""
    from app.engine import Sampling
    prompt = scorer.chat_prompt([{"role": "user", "content": "Name three fruits."}])
    plain = scorer.complete(prompt, max_tokens=8, sampling=Sampling()).text
    seen = []

    def step(ids, logits, hidden):
        seen.append(hidden.copy())
        return logits
    step.needs_hidden = True
    assert scorer.complete(prompt, max_tokens=8, sampling=Sampling(), bias=step).text == plain
    ids = scorer.tokenize(prompt)
    answer = scorer.tokenize(plain, special=False)
    hidden, _ = scorer.hidden_states(ids, answer)
    n = min(len(answer), len(seen))
    assert n >= 4
    np.testing.assert_allclose(np.stack(seen[:n]), hidden[:n], atol=0.05 * float(np.abs(hidden).max()))
    seen.clear()
    assert scorer.nll(ids, answer, step) == pytest.approx(scorer.nll(ids, answer), abs=1e-5)
    assert len(seen) == len(answer)
    np.testing.assert_allclose(np.stack(seen), hidden, atol=1e-6)
    assert scorer.complete(prompt, max_tokens=8, sampling=Sampling()).text == plain      # embeddings off again


def test_the_core_builds_the_persons_contexts_once_per_document(tailor, engine, monkeypatch):
    """Tailor.contexts: every titled document posed as the two tasks under the base model (the adapter comes
    back after), cached by content so an import computes only its own documents, and only when asked to (in the
    background after an import): an answer takes the keys there are. An answer without documents in its prompt
    gets them after the words (one step function that needs each step's hidden state)."""
    from app import knn
    from app.prompts import task_messages
    tailor._engine = engine
    tailor.import_paths([SAMPLES / "packaging"])
    version = tailor.adapt(load=True).version
    calls = []
    real = knn.document_keys
    monkeypatch.setattr(knn, "document_keys", lambda eng, title, text: (calls.append(title), real(eng, title, text))[1])
    assert tailor.contexts() is None and not calls                    # an answer never waits for the keys
    ctx = tailor.contexts(compute=True)
    titled = tailor.store.titled_documents(4)
    assert ctx is not None and len(titled) >= 2 and sorted(calls) == sorted(d["title"] for d in titled)
    assert engine.adapter_path is not None and engine.scale == tailor.settings.scale          # adapter back
    assert ctx.keys.shape == (len(ctx.values), engine.spec.n_embd) and len(ctx) > 50 * len(titled)
    assert tailor.contexts() is ctx and tailor.contexts(compute=True) is ctx      # once per set of documents
    from app.retrieval import without_heading
    with engine.detached():                                                       # the newest document first
        k, v = real(engine, titled[0]["title"], without_heading(titled[0]["text"], titled[0]["title"]))
    assert (ctx.values[:len(v)] == v).all()
    np.testing.assert_allclose(ctx.keys[:len(k)], k.astype(np.float32), atol=0.02)

    request = [{"role": "user", "content": task_messages("writing", title="A format for Python packages")[0]["content"]}]
    _, _, bias, active, _ = tailor._prepare(request, True, 1.0, False, 2, examples=False)
    assert active == version and getattr(bias, "needs_hidden", False)
    assert tailor._prepare(request, True, 1.0, False, 2, examples=False, words=False)[2] is None
    assert tailor.ask(request[0]["content"], examples=False, max_tokens=6, greedy=True).text

    calls.clear()
    tailor.import_paths([SAMPLES / "interpreter-performance"])
    assert len(tailor.contexts()) == len(ctx) and not calls                      # the new ones not yet
    more = tailor.contexts(compute=True)
    new = {t["title"] for t in tailor.store.titled_documents(4)} - {t["title"] for t in titled}
    assert more is not ctx and len(more) > len(ctx) and sorted(calls) == sorted(new)
    tailor._contexts = None
    monkeypatch.setattr(knn, "document_keys", lambda *a: pytest.fail("keys computed again, not read from the cache"))
    again = tailor.contexts(compute=True)
    np.testing.assert_array_equal(np.sort(again.values), np.sort(more.values))
