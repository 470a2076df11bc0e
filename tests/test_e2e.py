"""The whole real path: sample documents -> embeddings -> hypernetwork -> GGUF LoRA -> llama.cpp answers."""
import pytest

from app.core import Tailor
from app.engine import Engine
from tests.conftest import SAMPLES

PROMPT = "Write a short paragraph about the project you are working on."


def test_import_adapt_ask_and_hot_swap(home):
    loads_before = Engine.loads
    t = Tailor()
    summary = t.import_paths([SAMPLES / "interpreter-performance"])
    assert summary.imported == 6 and not summary.failed
    first = t.adapt(load=True)
    assert first.version == 1 and set(first.ms) == {"embed", "hypernet", "write", "load", "total"}

    with_a = t.ask(PROMPT, max_tokens=48, seed=1)     # one seed: the answers differ by the adapter alone
    without = t.ask(PROMPT, use_adapter=False, max_tokens=48, seed=1)
    assert with_a.adapter_version == 1 and without.adapter_version is None
    assert with_a.text != without.text
    assert t.ask(PROMPT, max_tokens=48, seed=1).text == with_a.text   # a seed makes a sampled answer reproducible
    assert t.ask(PROMPT, max_tokens=48, greedy=True).text == t.ask(PROMPT, max_tokens=48, greedy=True).text

    # a second person's profile, hot-swapped into the same loaded model
    for d in t.docs():
        t.store.delete_document(d["id"])
    t.import_paths([SAMPLES / "packaging"])
    second = t.adapt()
    assert second.version == 2
    with_b = t.ask(PROMPT, max_tokens=48, seed=1)
    assert with_b.adapter_version == 2
    assert with_b.text != with_a.text
    assert Engine.loads == loads_before + 1                           # the base model was loaded once
    t.close()


def test_reimport_skips_unchanged_and_detects_duplicates(home, tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.md").write_text("# Notes\n\nSome notes about compilers and interpreters.\n")
    (src / "copy.md").write_text("# Notes\n\nSome notes about compilers and interpreters.\n")
    t = Tailor()
    s1 = t.import_paths([src])
    assert (s1.imported, s1.duplicates) == (1, 1)
    s2 = t.import_paths([src])
    assert (s2.imported, s2.unchanged) == (0, 2)
    (src / "a.md").write_text("# Notes\n\nChanged: now about garbage collectors.\n")
    s3 = t.import_paths([src])
    assert s3.imported == 1
    t.embed_pending()
    assert t.store.chunks_without_embedding(t._embedder_id()) == []
    t.close()


def test_retrieval_returns_sources(home):
    t = Tailor()
    t.import_paths([SAMPLES / "packaging", SAMPLES / "interpreter-performance"])
    hits = t.retrieve("wheel binary package format", 3)
    assert hits and "wheel" in hits[0]["path"]
    t.close()


def test_embedder_upgrade_reembeds_instead_of_mixing(tailor):
    """Vectors from an older embedder graph are dropped and the chunks embedded again with the current one."""
    import numpy as np
    tailor.import_paths([SAMPLES / "packaging"])
    key = tailor._embedder_id()
    tailor.embed_pending()
    ids = [i for batch, _ in tailor.store.iter_embeddings(key) for i in batch]
    assert ids
    tailor.store.write(lambda c: c.execute("UPDATE embeddings SET embedder = 'old-graph'"))
    assert not list(tailor.store.iter_embeddings(key))
    tailor.close()                                   # the upgrade: the next process runs the new graph
    fresh = Tailor(tailor.home)
    fresh._embedder, fresh._hypernet, fresh._spec = tailor._embedder, tailor._hypernet, tailor._spec
    tailor = fresh
    assert tailor.embed_pending() == len(ids)
    assert [i for batch, _ in tailor.store.iter_embeddings(key) for i in batch] == ids
    assert tailor.store.read(lambda c: c.execute("SELECT COUNT(*) FROM embeddings WHERE embedder != ?",
                                                 (key,)).fetchone()[0]) == 0
    vecs = np.concatenate([v for _, v in tailor.store.iter_embeddings(key)])
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    fresh.close()


def test_task_requests_get_the_persons_documents_as_examples(tailor, engine):
    """A task request is answered after the person's nearest titled documents posed as the same task (the rag
    form the evaluation measured): by default, and with "Cite my documents" on; any other request gets
    passages to cite only with it on."""
    from app.prompts import task_messages
    tailor._engine = engine
    tailor.import_paths([SAMPLES / "packaging", SAMPLES / "interpreter-performance"])
    request = task_messages("writing", title="A binary package format for Python distributions")[0]["content"]
    prompt, sources, *_ = tailor._prepare([{"role": "user", "content": request}], False, None, True, 2)
    assert len(sources) == 2 and len({s["path"] for s in sources}) == 2
    assert any("wheel" in s["path"] for s in sources)
    assert prompt.count("Write the abstract of a paper titled") == 3            # two examples + the request
    assert '"The Wheel Binary Package Format 1.0"' in prompt                     # a document's own title ...
    assert "passages from my own writing" not in prompt
    assert "This PEP describes a built-package format" in prompt               # ... with its own text,
    assert "# The Wheel" not in prompt                                         # its heading (the answer) cut
    free, free_sources, *_ = tailor._prepare([{"role": "user", "content": "What is a wheel?"}], False, None, True, 2)
    assert "passages from my own writing" in free and free_sources
    answer = tailor.ask(request, use_adapter=False, rag=True, k=2, max_tokens=8)
    assert answer.text and [s["path"] for s in answer.sources] == [s["path"] for s in sources]
    assert tailor.settings.examples and not tailor.settings.rag                     # the defaults
    default, default_sources, *_ = tailor._prepare([{"role": "user", "content": request}], False, None, None, 2)
    assert default == prompt and default_sources == sources                         # examples without "Cite"
    assert tailor._prepare([{"role": "user", "content": "What is a wheel?"}], False, None, None, 2)[1] == []
    plain, none, *_ = tailor._prepare([{"role": "user", "content": request}], False, None, False, 2, examples=False)
    assert none == [] and plain.count("Write the abstract of a paper titled") == 1   # the request alone
    tailor.settings.examples = False
    assert tailor.ask(request, use_adapter=False, k=2, max_tokens=8).sources == []


def test_answers_without_documents_in_the_prompt_get_the_persons_words(tailor, engine):
    """app.words in the app: a request whose prompt holds none of the person's documents (a task with examples
    off, an everyday request) gets the bias of their words, at the strength the adapter has for it; a task request
    with worked examples, an answer without the adapter or with the setting off gets none. The words are counted
    from the documents as they are now (an import changes them)."""
    import numpy as np
    from app.prompts import CHAT_STRENGTH, task_messages
    from app.words import WordsHead
    tailor._engine = engine
    tailor.import_paths([SAMPLES / "packaging"])
    tailor.adapt(load=True)
    request = [{"role": "user", "content": task_messages("writing", title="A format for Python packages")[0]["content"]}]
    everyday = [{"role": "user", "content": "What should I cook tonight?"}]
    assert WordsHead.beside(tailor.hypernet) is not None          # shipped with the hypernetwork it was trained with
    prompt, _, bias, _, strength = tailor._prepare(request, True, 1.0, False, 2, examples=False)
    assert bias is not None and strength == 1.0
    words = tailor.words()
    logits = np.random.default_rng(0).normal(0, 3, engine.llm.n_vocab()).astype(np.float32)   # a step's logits
    before = np.asarray(engine.tokenize(prompt), dtype=np.intc)                                # and its tokens
    raised = bias(before, logits) - logits
    outside = np.setdiff1d(np.arange(len(logits)), words.support)
    assert (raised[outside] == 0).all() and (raised[words.support] != 0).all()
    wheel = engine.tokenize(" wheel", special=False)[0]             # the packaging notes' word, rare elsewhere
    assert raised[wheel] > 0.5 and raised[wheel] > np.median(raised[words.support])
    _, _, chat_bias, _, chat_strength = tailor._prepare(everyday, True, 1.0, False, 2)
    assert chat_strength == CHAT_STRENGTH
    np.testing.assert_allclose(chat_bias(before, logits) - logits, CHAT_STRENGTH * raised, rtol=1e-4, atol=1e-5)

    assert tailor._prepare(request, True, 1.0, False, 2)[2] is None                   # worked examples in it
    assert tailor._prepare(everyday, True, 1.0, True, 2)[2] is None                   # cited passages in it
    assert tailor._prepare(request, False, 1.0, False, 2, examples=False)[2] is None  # no adapter
    assert tailor._prepare(request, True, 1.0, False, 2, examples=False, words=False)[2] is None
    assert tailor.ask(request[0]["content"], examples=False, max_tokens=4, greedy=True).words
    assert not tailor.ask(request[0]["content"], max_tokens=4, greedy=True).words

    tailor.import_paths([SAMPLES / "interpreter-performance"])
    more = tailor.words()
    assert more is not words and len(more) > len(words) and tailor.words() is more    # counted once per profile


def test_a_bias_reaches_every_step_of_decoding_and_the_nll(engine):
    """Engine.stream's ``bias`` goes through llama-cpp-python's custom sampler (marked "probably broken" in its
    source): a bias on one token must decide greedy and sampled answers alike, and Engine.nll must apply it too.
    Each step's bias sees the tokens before that step (app.words reads the previous token from them), in decoding
    and in the NLL alike."""
    from app.engine import Sampling
    prompt = engine.chat_prompt([{"role": "user", "content": "Say hello."}])
    token = engine.tokenize(" banana", special=False)[0]
    seen = []

    def bias(ids, logits):
        seen.append(list(ids))
        out = logits.copy()
        out[token] += 100
        return out
    ids = engine.tokenize(prompt)
    for sampling in (Sampling(), Sampling(temperature=0.8, seed=3)):
        seen.clear()
        assert engine.complete(prompt, max_tokens=3, sampling=sampling, bias=bias).text == "banana banana banana"
        assert seen[:3] == [ids, ids + [token], ids + [token, token]]
    scorer = Engine(engine.model_path, n_ctx=512, logits_all=True)            # NLL needs every position's logits
    target = scorer.tokenize("Hello there!", special=False)
    plain = scorer.nll(ids, target)
    seen.clear()
    assert 0 < plain < 8 and scorer.nll(ids, target, bias) > plain + 50     # every target step pays for it
    assert seen == [ids + target[:i] for i in range(len(target))]


def test_everyday_requests_get_a_share_of_the_adapters_strength(tailor, engine):
    """The adapter is trained on the two tasks: a task request gets the whole strength, anything else
    prompts.CHAT_STRENGTH of it (its everyday-chat drift, MODEL_CARD); the answer says which it had."""
    from app.prompts import CHAT_STRENGTH, task_messages
    tailor._engine = engine
    tailor.import_paths([SAMPLES / "packaging"])
    version = tailor.adapt(load=True).version
    request = task_messages("writing", title="A binary package format for Python distributions")[0]["content"]
    everyday = [{"role": "user", "content": "What should I cook tonight?"}]
    *_, active, strength = tailor._prepare([{"role": "user", "content": request}], True, 0.8, False, 2)
    assert (active, strength) == (version, 0.8) and engine.scale == 0.8
    *_, active, strength = tailor._prepare(everyday, True, 0.8, False, 2)
    assert active == version and strength == engine.scale == pytest.approx(0.8 * CHAT_STRENGTH)
    assert 0 < CHAT_STRENGTH < 1
    # a follow-up to a task request is an everyday request: the rule reads the newest message only
    *_, strength = tailor._prepare([{"role": "user", "content": request}, {"role": "assistant", "content": "x"},
                                    *everyday], True, 1.0, False, 2)
    assert strength == pytest.approx(CHAT_STRENGTH)
    ans = tailor.ask("What should I cook tonight?", max_tokens=4)
    assert (ans.adapter_version, ans.strength) == (version, pytest.approx(tailor.settings.scale * CHAT_STRENGTH))
    assert tailor.ask(request, max_tokens=4, examples=False).strength == tailor.settings.scale
    off = tailor.ask("What should I cook tonight?", use_adapter=False, max_tokens=4)
    assert (off.adapter_version, off.strength, engine.scale) == (None, None, 0.0)
    assert tailor.ask("Hi", scale=0, max_tokens=4).strength is None
