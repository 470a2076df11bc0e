"""Hypernetwork: LoRA math against PEFT, zero-delta start, ONNX export parity and metadata, base check."""
import dataclasses

import numpy as np
import pytest
import torch

from app.hypernet import INTEGRITY_KEY, Hypernet, HypernetError, default_hypernet_path
from app.hypernet_meta import HypernetMeta, HypernetMetaError
from hypernet_onnx.export import export
from hypernet_onnx.model import BatchedLoRA, HyperConfig, HyperNet


def test_batched_lora_equals_peft_delta_weight():
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(16, 12, bias=False))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["0"], lora_dropout=0.0))
    layer = peft_model.base_model.model[0]
    a, b = torch.randn(4, 16), torch.randn(12, 4)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(a)
        layer.lora_B["default"].weight.copy_(b)
    delta = layer.get_delta_weight("default")                      # PEFT: the source of truth
    wrapped = BatchedLoRA(layer.base_layer)
    wrapped.a, wrapped.b, wrapped.scale = a[None], b[None], 8 / 4
    x = torch.randn(1, 5, 16)
    expected = x @ (layer.base_layer.weight + delta).T
    assert torch.allclose(wrapped(x), expected, atol=1e-5)
    assert torch.allclose(peft_model(x), expected, atol=1e-5)


def _cfg(**kw):
    return HyperConfig(input_dim=384, hidden=32, n_layers=30, shapes={"q_proj": (576, 576), "v_proj": (192, 576)},
                       **kw)


def test_initial_adapter_is_zero_delta():
    h = HyperNet(_cfg())
    out = h(torch.randn(3, 384))
    for m, (a, b) in out.items():
        assert a.shape[:3] == (3, 30, 8) and b.shape[:2] == (3, 30)
        assert a.abs().sum() > 0                      # A starts like a LoRA A...
        assert torch.count_nonzero(b) == 0            # ...and B at zero, so B @ A = 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory, spec):
    torch.manual_seed(1)
    h = HyperNet(_cfg())
    with torch.no_grad():
        for p in h.parameters():
            p.add_(torch.randn_like(p) * 0.02)        # parity must hold for trained-looking weights, not zeros
    st = {"train_config": {"name": "parity"}, "hyper_config": h.cfg.to_dict(), "step": 7, "hyper": h.state_dict(),
          "data_hash": "abcdef0123456789", "base_fingerprint": spec.fingerprint(), "log": [{"step": 7, "dev": 1.5}]}
    d = tmp_path_factory.mktemp("hn")
    torch.save(st, d / "ckpt.pt")
    return h.eval(), export(d / "ckpt.pt", d / "hn.onnx")


def test_onnx_matches_torch(exported, spec):
    h, path = exported
    x = np.random.default_rng(0).standard_normal((1, 384)).astype(np.float32)
    with torch.no_grad():
        ref = h(torch.from_numpy(x))
    ad = Hypernet(path, spec).generate(x)
    worst = 0.0
    for (layer, m), (a, b) in ad.weights.items():
        worst = max(worst, np.abs(a - ref[m][0][0, layer].numpy()).max(), np.abs(b - ref[m][1][0, layer].numpy()).max())
    assert worst <= 1e-4, worst


def test_onnx_metadata(exported, spec):
    _, path = exported
    hn = Hypernet(path, spec)
    assert hn.rank == 8 and hn.alpha == 16.0 and hn.modules == ["q_proj", "v_proj"] and hn.pooling == "mean"
    for key in ("embedder_id", "training_data_sha256", "training_steps", "base_fingerprint", "io"):
        assert hn.meta[key], key
    assert hn.meta["training_steps"] == "7"
    assert path.stat().st_size <= 20 * 2**20


def test_refuses_hypernet_for_another_base(exported, spec):
    _, path = exported
    other = dataclasses.replace(spec, n_layer=24)
    with pytest.raises(HypernetError, match="another base model"):
        Hypernet(path, other)


def test_shipped_hypernet_fits_the_base_model(spec):
    hn = Hypernet(None, spec)
    assert hn.path.stat().st_size <= 20 * 2**20
    assert int(hn.meta["training_steps"]) > 0        # trained, never random


def _residual_checkpoint(path, spec, **train_config):
    """A residual hypernetwork (shared LoRA + residual, standardized input) with random weights, saved as a
    training checkpoint."""
    torch.manual_seed(2)
    h = HyperNet(_cfg(standardize=True, shared_rank=8))
    with torch.no_grad():
        for p in h.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        h.set_input_stats(torch.randn(384) * 0.1, torch.rand(384) + 0.5)
        h.set_shared({m: (torch.randn(30, 8, s[1]) * 0.05, torch.randn(30, s[0], 8) * 0.05)
                      for m, s in h.cfg.shapes.items()})
    st = {"train_config": {"name": "residual", **train_config}, "hyper_config": h.cfg.to_dict(), "step": 3,
          "hyper": h.state_dict(), "data_hash": "abcdef0123456789", "base_fingerprint": spec.fingerprint(),
          "log": [{"step": 3, "dev": 1.5}]}
    torch.save(st, path)
    return h.eval()


def test_residual_design_exports_one_adapter_with_the_trained_scale(tmp_path, spec):
    """A residual hypernetwork exports as one rank-2r adapter whose delta W through the app (alpha/rank from the
    metadata) is the one training applied: s (B0 A0 + Br Ar)."""
    h = _residual_checkpoint(tmp_path / "ckpt.pt", spec)
    hn = Hypernet(export(tmp_path / "ckpt.pt", tmp_path / "hn.onnx"), spec)
    assert hn.rank == 16 and hn.alpha / hn.rank == h.scale
    x = np.random.default_rng(1).standard_normal((1, 384)).astype(np.float32)
    with torch.no_grad():
        ref = h.eval()(torch.from_numpy(x))
    ad = hn.generate(x)
    for (layer, m), (a, b) in ad.weights.items():
        want = h.scale * (ref[m][1][0, layer] @ ref[m][0][0, layer]).numpy()
        got = ad.scale * (b @ a)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (layer, m)


def test_a_residual_mt_lora_is_written_with_the_trained_scale(tmp_path, spec):
    """The fair control of a residual run (the same model with the profile zeroed) goes to llama.cpp as one GGUF
    of rank 2r: its alpha must keep alpha / rank at the trained scale, or the control runs at half strength."""
    from app.lora_gguf import read_adapter
    from hypernet_onnx import mt_lora
    h = _residual_checkpoint(tmp_path / "ckpt.pt", spec, profile_input="zeros")
    mt_lora.main(["--ckpt", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "mt.gguf")])
    ad = read_adapter(tmp_path / "mt.gguf", spec)
    assert ad.rank == 16 and ad.scale == h.scale
    with torch.no_grad():
        ref = h(torch.zeros(1, 384))
    for layer, m in [(0, "q_proj"), (29, "v_proj")]:
        want = h.scale * (ref[m][1][0, layer] @ ref[m][0][0, layer]).double().numpy()
        assert np.abs(ad.delta(layer, m) - want).max() <= 1e-3 * np.abs(want).max(), (layer, m)


# --- the metadata contract (app.hypernet_meta) between the export and the app ----------------------------------

def _meta(**kw):
    fields = dict(hypernet_id="small-s7-abcdef01", base_fingerprint="ddc40305d3a862a0",
                  embedder_id="sentence-transformers/all-MiniLM-L6-v2", pooling="mean", input_dim=384, rank=8,
                  alpha=16.0, target_modules=("q_proj", "v_proj"), n_layers=30,
                  training_data_sha256="abcdef0123456789", training_steps=7, dev_nll=1.5,
                  io={"inputs": {"profile": [1, 384]}, "outputs": {"q_proj.lora_a": [30, 8, 576]}},
                  config={"input_dim": 384, "modules": ["q_proj", "v_proj"], "alpha": 16.0})
    return HypernetMeta(**{**fields, **kw})


def test_metadata_round_trips_through_the_onnx_strings():
    meta = _meta()
    strings = meta.to_onnx_metadata()
    assert all(isinstance(v, str) for v in strings.values())
    assert {k: strings[k] for k in ("format", "rank", "alpha", "target_modules", "training_steps", "dev_nll")} == \
        {"format": "tailor-hypernet/1", "rank": "8", "alpha": "16.0", "target_modules": "q_proj,v_proj",
         "training_steps": "7", "dev_nll": "1.5000"}
    assert HypernetMeta.from_onnx_metadata(strings) == meta


def test_the_shipped_hypernets_metadata_is_the_contract_unchanged():
    """Parsing the shipped file and writing it back gives its strings exactly: same keys, same formats."""
    onnx = pytest.importorskip("onnx")
    stored = {p.key: p.value for p in onnx.load(str(default_hypernet_path())).metadata_props}
    stored.pop(INTEGRITY_KEY)
    meta = HypernetMeta.from_onnx_metadata(stored)
    assert meta.rank == 8 and meta.target_modules == ("q_proj", "v_proj") and meta.training_steps > 0
    assert meta.to_onnx_metadata() == stored


@pytest.mark.parametrize("change, error", [
    ({"rank": None}, r"missing key 'rank'"),
    ({"rank": "eight"}, r"'rank' is not an integer: 'eight'"),
    ({"input_dim": "384.0"}, r"'input_dim' is not an integer: '384.0'"),
    ({"alpha": "sixteen"}, r"'alpha' is not a number: 'sixteen'"),
    ({"target_modules": "q_proj,lm_head"}, r"'target_modules' has unknown modules \['lm_head'\]"),
    ({"io": "[1, 2]"}, r"'io' is not a JSON object"),
    ({"format": "tailor-hypernet/2"}, r"'format' is 'tailor-hypernet/2'"),
])
def test_a_missing_or_malformed_key_is_named(change, error):
    strings = _meta().to_onnx_metadata()
    strings.update({k: v for k, v in change.items() if v is not None})
    for k in [k for k, v in change.items() if v is None]:
        del strings[k]
    with pytest.raises(HypernetMetaError, match=error):
        HypernetMeta.from_onnx_metadata(strings)


def test_the_app_sees_the_metadata_the_export_wrote(exported, spec):
    _, path = exported
    hn = Hypernet(path, spec)
    assert hn.contract.to_onnx_metadata() == {k: v for k, v in hn.meta.items() if k != INTEGRITY_KEY}
    assert (hn.id, hn.rank, hn.alpha, hn.modules) == (hn.contract.hypernet_id, 8, 16.0, ["q_proj", "v_proj"])


def test_shared_plus_person_is_the_shared_lora_plus_the_persons_deviation(exported):
    """The model card's "shared LoRA plus this file's person part" figures score this composition: it must be
    dW_mt + gamma (dW_h(p) - dW_h(p_bar)), and exactly the shared LoRA for the average person."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "scripts" / "shared_plus_person.py"
    spec_ = importlib.util.spec_from_file_location("shared_plus_person", path)
    spp = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(spp)

    h, onnx_path = exported
    torch.manual_seed(2)
    mt = HyperNet(_cfg())
    with torch.no_grad():
        for p in mt.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hyper = spp.OnnxHyper(onnx_path, tuple(h.cfg.modules), h.scale)
    p_bar, people = torch.randn(384), torch.randn(2, 384)
    comb = spp.SharedPlusPerson(mt.eval(), hyper, p_bar, gamma=0.5)

    def dw(ad):
        return {m: b @ a for m, (a, b) in ad.items()}                 # (B, L, out, in), before the shared scale
    with torch.no_grad():
        got = dw(comb(torch.cat([people, p_bar[None]])))
        shared, own, mean = dw(mt(torch.zeros(1, 384))), dw(h(people)), dw(h(p_bar[None]))
    assert comb.scale == h.scale
    for m in h.cfg.modules:
        assert got[m].shape[-2:] == shared[m].shape[-2:]
        assert torch.allclose(got[m][:2], shared[m] + 0.5 * (own[m] - mean[m]), atol=1e-5)
        assert torch.allclose(got[m][2], shared[m][0], atol=1e-5)     # the average person gets the shared LoRA
        assert not torch.allclose(got[m][0], got[m][1], atol=1e-4)    # two people, two adapters


def _script(name):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec_ = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    return mod


def test_profile_identity_measures_what_the_model_card_says(exported):
    """The model card's "where the person is lost" figures: ranks, halves, the person share and the probed
    adapter must be what their names say."""
    pi = _script("profile_identity")
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    queries = np.array([[1.0, 0.1], [1.0, 0.1], [0.0, 1.0]])
    assert pi.ranks(queries, keys, np.array([0, 2, 1])).tolist() == [1, 2, 1]

    rng = np.random.default_rng(0)
    user = {"profile": [{"title": f"T{i}", "text": f"Short text number {i}."} for i in range(5)]}
    emb = rng.standard_normal((5, 384)).astype(np.float32)            # one chunk per short item
    a, b = pi.halves(user, emb)
    assert np.allclose(a, emb[[0, 2, 4]].mean(0), atol=1e-6) and np.allclose(b, emb[[1, 3]].mean(0), atol=1e-6)

    same = np.ones((4, 3))
    assert pi.person_share(same) == 0.0
    assert pi.person_share(np.array([[1.0, 0.0], [-1.0, 0.0]])) == 1.0    # no shared part at all

    _, onnx_path = exported
    net = Hypernet(onnx_path)
    profiles = rng.standard_normal((2, 384)).astype(np.float32)
    probe = pi.delta_probe(net, profiles, probes=3)
    ad = net.generate(profiles[1])
    first = sorted(ad.weights)[0]
    d = ad.weights[first][0].shape[1]
    x = np.random.default_rng(0).standard_normal((d, 3)) / np.sqrt(d)              # the first probe draw
    n = ad.delta(*first).shape[0] * 3
    assert np.allclose(probe[1, :n], (ad.delta(*first) @ x).ravel(), atol=1e-6)
    assert not np.allclose(probe[0], probe[1])


def test_vocab_bias_scores_what_the_model_card_says(tiny_cfg, sample_data):
    """The model card's "Is the person lexical?" figures: counts of the tokenizer's ids, the cache interpolation a
    distribution, the PMI bias raising only the author's over-used tokens."""
    import torch
    from hypernet_onnx.data import load_users
    from hypernet_onnx.frozen_base import load_base
    vb = _script("vocab_bias")
    _, tok, _, _ = load_base(tiny_cfg)
    user = load_users(sample_data, 1)[0]
    counts = vb.token_counts(tok, [user], len(tok))
    it = user["profile"][0]
    first = tok(it["title"], add_special_tokens=False)["input_ids"]
    assert counts.sum() == sum(len(tok(x, add_special_tokens=False)["input_ids"])
                               for i in user["profile"] for x in (i["title"], i["text"]))
    assert all(counts[t] > 0 for t in first)

    bg = np.ones(len(tok)) / len(tok)
    bias = vb.pmi_bias(counts, np.log(bg))
    assert (bias[counts == 0] == 0).all() and (bias[counts > 0] > 0).all() and bias.max() <= vb.PMI_CAP
    assert (vb.pmi_bias(counts, np.log(np.where(counts > 0, 1.0, 1e-9))) == 0).all()    # used no more than the bg

    rng = np.random.default_rng(0)
    logp = torch.log_softmax(torch.tensor(rng.standard_normal((3, len(tok))), dtype=torch.float32), -1)
    q = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    mixed = vb.cached(logp, q, None, "mix", 0.1)
    assert torch.allclose(mixed.exp(), 0.9 * logp.exp() + 0.1 * q, atol=1e-6)
    b = torch.tensor(bias, dtype=torch.float32)
    raised = vb.cached(logp, q, b, "pmi", 0.5)
    assert torch.allclose(raised.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(raised - raised[:, :1], (logp + 0.5 * b) - (logp + 0.5 * b)[:, :1], atol=1e-4)


def test_vocab_ceiling_scores_a_bias_on_the_support_as_the_full_softmax_does():
    """scripts/vocab_ceiling.py keeps only the log-probs on an author's tokens; its NLL under a bias there must be
    the full softmax's over the whole vocabulary, targets inside and outside the support alike."""
    import torch
    vc = _script("vocab_ceiling")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50, generator=g) * 3
    lp = torch.log_softmax(logits, -1)
    support = torch.tensor([1, 4, 7, 9, 20, 33])
    tgt = torch.tensor([4, 2, 33, 49, 1])                 # two targets off the support
    b = torch.randn(len(support), generator=g)
    full = logits.clone()
    full[:, support] += b
    want = torch.nn.functional.cross_entropy(full, tgt)
    assert torch.allclose(vc.biased_nll(vc.keep(lp, tgt, support), b), want, atol=1e-5)
    assert torch.allclose(vc.biased_nll(vc.keep(lp, tgt, support), torch.zeros(len(support))),
                          torch.nn.functional.cross_entropy(logits, tgt), atol=1e-5)
    per = torch.randn(5, len(support), generator=g)       # one bias per position (scripts/vocab_head.py)
    full = logits.clone()
    full[:, support] += per
    assert torch.allclose(vc.biased_nll(vc.keep(lp, tgt, support), per),
                          torch.nn.functional.cross_entropy(full, tgt), atol=1e-5)


def test_vocab_head_starts_at_the_pmi_bias_and_never_counts_the_target(tiny_cfg, sample_data):
    """scripts/vocab_head.py: a training target's own tokens are not in the counts its bias is made from (else the
    head learns to copy the answer), and an untrained head is the PMI bias of vocab_bias.py, per token and per
    position alike."""
    import torch
    from hypernet_onnx.data import load_users
    from hypernet_onnx.frozen_base import load_base
    vb, vh = _script("vocab_bias"), _script("vocab_head")
    _, tok, _, _ = load_base(tiny_cfg)
    user = next(u for u in load_users(sample_data) if len(u["profile"]) > 2)
    au = vh.Author(tok, user, len(tok))
    rest = vb.token_counts(tok, [dict(user, profile=user["profile"][1:])], len(tok))
    c, d, n = au.stats(leave_out=0)
    assert (c == rest).all() and n == len(user["profile"]) - 1 and d.max() <= n
    assert (au.stats()[0] == vb.token_counts(tok, [user], len(tok))).all()

    log_bg = np.log(np.full(len(tok), 1 / len(tok)))
    f, has = au.features(log_bg, leave_out=0)
    s = au.support.numpy()
    assert (has.numpy() == (rest[s] > 0)).all() and not has.all()      # the first item's own words: no bias
    want = torch.tensor(0.3 * vb.pmi_bias(rest, log_bg)[s], dtype=torch.float32)
    assert torch.allclose(vh.VocabHead(False)(f, has, {}), want, atol=1e-6)
    k = {"s": torch.log_softmax(torch.randn(4, len(s)), -1), "h": torch.rand(4)}
    assert torch.allclose(vh.VocabHead(True)(f, has, k), want.expand(4, -1), atol=1e-6)
    moved = vh.VocabHead(False)
    torch.nn.init.constant_(moved.mlp[-1].bias, 1.0)                     # trained: raises every token it sees
    assert (moved(f, has, {})[~has] == 0).all() and (moved(f, has, {})[has] != 0).all()


def test_vocab_head_near_features_count_only_the_items_retrieved_for_the_request(tiny_cfg, sample_data):
    """scripts/vocab_head.py's kind "2n": per token, its count in the items retrieved for the request and the share
    of them holding it, nothing from the other items; a head of that kind reads them, one without does not."""
    import torch
    from hypernet_onnx.data import load_users
    from hypernet_onnx.frozen_base import load_base
    vb, vh = _script("vocab_bias"), _script("vocab_head")
    _, tok, _, _ = load_base(tiny_cfg)
    user = next(u for u in load_users(sample_data) if len(u["profile"]) > 2)
    au = vh.Author(tok, user, len(tok))
    idx = [1, 2]
    near = au.near(idx).numpy()
    s = au.support.numpy()
    c = vb.token_counts(tok, [dict(user, profile=[user["profile"][i] for i in idx])], len(tok))[s]
    d = sum(np.isin(s, au.items[i][0]) for i in idx)
    assert np.allclose(near[:, 0], np.log1p(c) / 3) and np.allclose(near[:, 1], d / len(idx))
    only_first = ~np.isin(s, np.concatenate([au.items[i][0] for i in idx]))
    assert only_first.any() and (near[only_first] == 0).all()          # the other items' words: no near count

    f, has = au.features(np.log(np.full(len(tok), 1 / len(tok))))
    A = 3
    k = {"s": torch.log_softmax(torch.randn(A, len(s)), -1), "h": torch.rand(A)}
    follows = au.follows({"ti": torch.full((A,), -1)}, (0, 0))
    torch.manual_seed(0)
    with_near, without = vh.VocabHead("2n"), vh.VocabHead(2)
    assert with_near.mlp[0].in_features == without.mlp[0].in_features + 2
    with torch.no_grad():
        for p in with_near.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    other = torch.tensor(near[::-1].copy())
    assert not torch.allclose(with_near(f, has, k, follows, torch.tensor(near)), with_near(f, has, k, follows, other))
    assert torch.equal(without(f, has, k, follows, torch.tensor(near)), without(f, has, k, follows, other))


@pytest.mark.parametrize("kind", [1, 2, 3])
def test_the_apps_words_head_is_the_trained_head_in_numpy(tiny_cfg, sample_data, tmp_path, kind):
    """app.words (what the app runs, numpy) against scripts/vocab_head.VocabHead (what was trained, torch), through
    the export and a save/load: the same features from a person's documents and the same bias at each step,
    without (kind 1) and with the features of what follows the previous token (kind 2) and the two previous
    tokens (kind 3) in the documents, each step's previous tokens taken from the tokens before it as llama.cpp
    passes them."""
    import torch
    from app.words import WordsHead
    from hypernet_onnx.data import load_users
    from hypernet_onnx.frozen_base import load_base
    vh = _script("vocab_head")
    _, tok, _, _ = load_base(tiny_cfg)
    user = next(u for u in load_users(sample_data) if len(u["profile"]) > 2)
    au = vh.Author(tok, user, len(tok))
    rng = np.random.default_rng(0)
    log_bg = np.log(rng.dirichlet(np.ones(len(tok))))
    torch.manual_seed(0)
    head = vh.VocabHead(kind)
    with torch.no_grad():                                         # a trained head: every weight away from its init
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    f, has = au.features(log_bg)
    path = tmp_path / "words.npz"
    vh.words_head(head, log_bg, 1e9, "hn-1").save(path)
    app_head = WordsHead.load(path)
    assert app_head.hypernet_id == "hn-1" and app_head.orders == tuple(range(2, kind + 1))
    docs = [[t for text in (it.get("title", ""), it.get("text", "")) for t in tok(text, add_special_tokens=False)["input_ids"]]
            for it in user["profile"]]
    words = app_head.profile(docs)
    support = au.support.numpy()
    assert (words.support == support).all() and has.all()
    np.testing.assert_allclose(words.f, f.numpy(), atol=1e-5)

    d = docs[0]                                     # a prompt's last token, then the answer's four tokens,
    seq = np.array([d[0], d[1], d[2], len(tok) - 1, d[3]], dtype=np.intc)   # one of them one the person never
    assert len(tok) - 1 not in support                              # wrote (the last step follows nothing of theirs)
    k = {"ti": torch.tensor([int(np.searchsorted(support, t)) if t in support else -1 for t in seq[1:]])}
    follows = au.follows(k, (int(seq[0]),))
    assert all(len(at) > 0 for at, _ in follows)                    # the documents' pairs and triples reach it
    logits = torch.randn(4, len(tok)) * 3
    lp = torch.log_softmax(logits, -1)
    want = head(f, has, {"s": lp[:, support], "h": vh.entropy(lp)}, follows).detach().numpy()   # (4, S)
    outside = np.setdiff1d(np.arange(len(tok)), support)
    for a in range(4):
        x = logits[a].numpy()
        before = seq[:a + 1]                                        # the tokens before step a
        got = words.processor(1.0)(before, x) - x
        np.testing.assert_allclose(got[support], want[a], atol=1e-4)
        assert (got[outside] == 0).all()
        np.testing.assert_allclose(words.processor(0.25)(before, x) - x, 0.25 * got, atol=1e-5)

    total = sum(map(len, docs))                                  # a profile larger than any trained on
    small = WordsHead.load(path).__class__(**{**app_head.__dict__, "max_total": total / 4}).profile(docs)
    np.testing.assert_allclose(small.f[:, :2], words.f[:, :2], atol=1e-5)       # its PMI unchanged,
    np.testing.assert_allclose(small.f[:, 5], np.log(total / 4) / 8, atol=1e-6)  # counted at the trained size


def test_guided_greedy_adds_a_bias_computed_from_each_steps_log_probs(tiny_cfg):
    """scripts/person_guidance.guided_greedy (the decoder of vocab_bias/vocab_head --generate): a callable bias sees
    each step's log-probabilities and decides that step; a bias of zeros changes nothing."""
    import torch
    from hypernet_onnx.frozen_base import load_base
    from hypernet_onnx.model import attach_lora
    pg = _script("person_guidance")
    model, _, _, _ = load_base(tiny_cfg)
    wrappers = attach_lora(model, tuple(tiny_cfg.modules))
    prompt = ([5, 9, 14, 3], None)
    seen = []

    def zeros(lp):
        seen.append(lp)
        return torch.zeros_like(lp)

    plain = pg.guided_greedy(model, wrappers, 1.0, prompt, (None, None), 0.0, 6, stop=-1)
    assert pg.guided_greedy(model, wrappers, 1.0, prompt, (None, None), 0.0, 6, stop=-1, bias=zeros) == plain
    assert len(seen) == 6 and all(torch.allclose(x.exp().sum(), torch.tensor(1.0), atol=1e-4) for x in seen)
    other = next(t for t in range(len(seen[0])) if t not in plain)
    forced = lambda lp: torch.where(torch.arange(len(lp)) == other, 1e4, 0.0)    # noqa: E731
    assert pg.guided_greedy(model, wrappers, 1.0, prompt, (None, None), 0.0, 6, stop=-1, bias=forced) == [other] * 6


def test_knn_words_mixes_the_nearest_keys_votes_with_the_models_probability():
    """scripts/knn_words.py: each position's k nearest keys vote for their values with softmax(-d^2 / T), and the
    answer is scored under lambda p_knn + (1 - lambda) p; checked against a brute-force reading of the definition
    (every key's distance, a dense vote over the vocabulary)."""
    import torch
    kw = _script("knn_words")
    g = torch.Generator().manual_seed(0)
    keys, vals = torch.randn(40, 6, generator=g), torch.randint(0, 5, (40,), generator=g)
    h, tgt = torch.randn(7, 6, generator=g), torch.randint(0, 5, (7,), generator=g)
    lp = torch.log_softmax(torch.randn(7, 5, generator=g), -1).gather(1, tgt[:, None])[:, 0].numpy()
    d, m = kw.neighbours(h, tgt, (keys, vals))
    assert d.shape == m.shape == (7, min(kw.TOP, 40)) and (np.diff(d, axis=1) >= 0).all()
    side = {"d": d, "m": m, "lp": lp}
    k, T, lam = 8, 3.0, 0.3
    want = []
    for a in range(7):
        dist = ((keys - h[a]) ** 2).sum(1)
        near = dist.argsort()[:k]
        w = torch.softmax(-dist[near] / T, 0)
        p_knn = torch.zeros(5).index_add_(0, vals[near], w)[tgt[a]]
        want.append(-np.log(lam * float(p_knn) + (1 - lam) * np.exp(lp[a])))
    assert abs(kw.knn_nll(side, k, T, lam, "lp") - np.mean(want)) < 1e-4
    assert abs(kw.knn_nll(side, k, T, 0.0, "lp") + lp.mean()) < 1e-6          # lambda 0: the model alone
    side["m"] = np.ones_like(m)                                                 # every neighbour votes the target
    assert abs(kw.knn_nll(side, k, T, 1.0, "lp")) < 1e-6
