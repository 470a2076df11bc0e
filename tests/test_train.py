"""The training loop on a tiny random llama: gradients flow, loss falls, checkpoints resume."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from hypernet_onnx.train import Trainer


def test_gradients_reach_every_head(tiny_cfg):
    tr = Trainer(tiny_cfg)
    batch = tr.train[:4]
    loss = tr.losses(batch).mean()
    loss.backward()
    # B's head gets gradient at once (A is non-zero at init); A's head only once B moves
    for m in tiny_cfg.modules:
        assert tr.hyper.head_b[m].weight.grad.abs().sum() > 0, m
        assert tr.hyper.head_b[m].bias.grad.abs().sum() > 0, m
    assert tr.hyper.encoder[1].weight.grad is not None


def test_adapter_starts_at_zero_delta(tiny_cfg):
    tr = Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-zero"))
    with torch.no_grad():
        base = tr.evaluate()
    # at init dW = B A = 0, so the personalized loss equals the base model's
    assert base["dev"] == pytest.approx(base["dev_base"], abs=1e-5)
    assert base["chat_drift"] == pytest.approx(0, abs=1e-5) and base["chat_base"] > 0   # everyday chat untouched too


def test_loss_falls_and_resumes(tiny_cfg):
    tr = Trainer(tiny_cfg)
    log = tr.run()
    assert log[-1]["step"] == tiny_cfg.steps
    first, last = log[0]["dev"], log[-1]["dev"]
    assert last < first - 0.1, (first, last)   # fits its own training users (deterministic run)
    assert (Path(tiny_cfg.out_dir) / "loss.png").stat().st_size > 1000
    # resuming from the checkpoint continues at the saved step with the same weights
    more = dataclasses.replace(tiny_cfg, steps=tiny_cfg.steps + 2)
    tr2 = Trainer(more)
    assert tr2.step == tiny_cfg.steps
    for (k, v), v2 in zip(tr.hyper.state_dict().items(), tr2.hyper.state_dict().values()):
        assert torch.equal(v, v2), k
    tr2.run()
    assert tr2.step == tiny_cfg.steps + 2


def test_until_stops_at_a_step_with_the_full_schedule(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-until")
    tr = Trainer(cfg)
    log = tr.run(until=5)
    assert tr.step == 5 and log[-1]["step"] == 5 and "dev" in log[-1]   # evaluated where it stopped
    assert log[-1]["lr"] == pytest.approx(tr.lr_at(5))                  # schedule of the full run, not of 5 steps
    assert tr.lr_at(5) > tr.lr_at(cfg.steps - 1)
    again = Trainer(cfg)                                                  # resumes from the checkpoint
    assert again.step == 5
    again.run(until=7)
    assert again.step == 7


def test_embedding_cache_is_per_embedder_graph(tmp_path, monkeypatch, sample_data):
    """Training must see what the app computes: another embedder graph (or way of running it) never reuses a
    cached block."""
    import numpy as np
    from hypernet_onnx import data as D

    class Counting:
        calls = 0

        def embed(self, texts):
            Counting.calls += 1
            return np.zeros((len(texts), 384), np.float32)

    monkeypatch.setattr(D, "CACHE_DIR", tmp_path)
    path = sample_data
    users = D.load_users(path, 1)
    D.embed_users(path, users, Counting(), progress=False)
    D.embed_users(path, users, Counting(), progress=False)
    assert Counting.calls == 1                                   # same graph: served from the cache
    monkeypatch.setattr("app.embed.VECTORS_ID", "another-graph-hash")
    D.embed_users(path, users, Counting(), progress=False)
    assert Counting.calls == 2 and len(list(tmp_path.iterdir())) == 2


def test_embedding_cache_keeps_the_blocks_of_other_user_lists(tmp_path, monkeypatch, sample_data):
    """Two runs over different authors of one file (training 0-999, a words head's 600-799) must not evict each
    other's cached blocks: each was recomputed in turn while both ran (session 25)."""
    import numpy as np
    from hypernet_onnx import data as D

    class Counting:
        calls = 0

        def embed(self, texts):
            Counting.calls += 1
            return np.full((len(texts), 384), Counting.calls, np.float32)

    monkeypatch.setattr(D, "CACHE_DIR", tmp_path)
    users = D.load_users(sample_data, 3)
    first, second = users[:1], users[1:3]
    a = D.embed_users(sample_data, first, Counting(), progress=False)
    b = D.embed_users(sample_data, second, Counting(), progress=False)
    n = Counting.calls
    again_a = D.embed_users(sample_data, first, Counting(), progress=False)
    again_b = D.embed_users(sample_data, second, Counting(), progress=False)
    assert Counting.calls == n                                          # both served from the cache
    for x, y in ((a, again_a), (b, again_b)):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def test_init_from_takes_weights_strictly_and_schedule_fresh(tiny_cfg):
    src = dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-src")
    first = Trainer(src)
    first.run(until=6)
    ckpt = Path(src.out_dir) / "ckpt.pt"
    warm = Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-warm", init_from=str(ckpt)))
    assert warm.step == 0                                                # fresh schedule and optimizer
    for (k, v), v2 in zip(first.hyper.state_dict().items(), warm.hyper.state_dict().values()):
        assert torch.equal(v, v2), k
    assert warm.evaluate()["dev"] == pytest.approx(first.log[-1]["dev"], abs=1e-5)
    # a checkpoint of another model shape is refused, never loaded partially
    with pytest.raises(SystemExit, match="another model config"):
        Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-bad", hidden=16, init_from=str(ckpt)))
    with pytest.raises(SystemExit, match="no checkpoint"):
        Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-none", init_from=str(ckpt) + ".missing"))


def test_contrast_hinge_compares_with_another_users_adapter(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-contrast", contrast=1.0, margin=10.0)
    tr = Trainer(cfg)
    for _ in range(3):
        tr.train_step()                          # the hypernetwork now depends on the profile
    tr.hyper.eval()                              # no dropout: the three passes below see the same adapters
    batch = tr.train[:4]
    users = [ex.user for ex in batch]
    other = tr.others(users)
    assert all(other[u] != u for u in other) and tr.others(users) == other   # never oneself; resumable
    with torch.no_grad():
        own = tr.losses(batch)
        theirs = tr.losses(batch, lambda e: other[e.user])
        got = tr.step_loss(batch)
    assert not torch.allclose(own, theirs)        # another user's adapter really is another adapter
    # a margin this large keeps the hinge active on every example: own + (margin + own - theirs)
    assert float(got) == pytest.approx(float(own.mean() + (10.0 + own - theirs).mean()), rel=1e-5)
    tr.step_loss(batch).backward()
    assert tr.hyper.encoder[1].weight.grad.abs().sum() > 0
    plain = Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-plain"))
    with torch.no_grad():
        assert float(plain.step_loss(batch)) == pytest.approx(float(plain.losses(batch).mean()), rel=1e-6)


def _chat_rows(tmp_path, prompts):
    from app.models import DEFAULT_BASE
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "kind": "train", "prompt": p, "answer": f"Sure. {p} is easy.",
                                        "ended": True, "base_sha256": DEFAULT_BASE.sha256}) + "\n"
                            for i, p in enumerate(prompts)))
    return path


def test_chat_kl_rides_in_the_task_pass_and_holds_everyday_chat_near_the_base(tiny_cfg, tmp_path):
    chat = _chat_rows(tmp_path, ["Plan my week.", "A joke about cats?", "Fix my bike chain", "Soup recipe please"])
    cfg = dataclasses.replace(tiny_cfg, chat_kl=1.0, chat_batch=2, chat_data=str(chat), steps=12)

    def kl_of(tr, keys, items, rows, idx):
        with torch.no_grad():
            logits, _, lm = tr.logits_under(keys, items)
            return float(tr.chat_kl(logits[rows:], lm[rows:], idx))

    def trained(weight):                 # the same run (seed, data, steps) with the KL term weighted so
        tr = Trainer(dataclasses.replace(cfg, out_dir=str(tmp_path / f"kl{weight}"), chat_kl=weight))
        assert len(tr.kl_items) == len(tr.kl_base) == 4
        keys = [ex.profile_key for ex in tr.train[:4]]
        assert kl_of(tr, keys, tr.kl_items, 0, [0, 1, 2, 3]) == pytest.approx(0, abs=1e-3)   # dW = 0 at the start
        for _ in range(12):
            tr.train_step()
        tr.hyper.eval()
        return tr, keys, kl_of(tr, keys, tr.kl_items, 0, [0, 1, 2, 3])
    tr, keys, free = trained(1e-9)
    _, _, held = trained(10.0)
    assert held < 0.8 * free, (held, free)
    # the chat rows padded beside task rows in one pass score as in a pass of their own; the base against itself: 0
    batch = tr.train[:3]
    joint = kl_of(tr, keys[:3] + keys[:2], tr.tokens.get(batch, tr._encode) + tr.kl_items[:2], 3, [0, 1])
    assert joint == pytest.approx(kl_of(tr, keys[:2], tr.kl_items[:2], 0, [0, 1]), rel=1e-3) and joint > 1e-4
    assert kl_of(tr, None, tr.kl_items[:2], 0, [0, 1]) == pytest.approx(0, abs=1e-3)


def test_chat_kl_refuses_the_anchors_it_is_measured_on(tiny_cfg, tmp_path):
    from hypernet_onnx import chat_anchors
    rows = chat_anchors.load()[:1] + chat_anchors.load(chat_anchors.TRAIN)[:2]
    path = tmp_path / "leak.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="holds chat anchors"):
        Trainer(dataclasses.replace(tiny_cfg, out_dir=str(tmp_path / "leak"), chat_kl=1.0, chat_data=str(path)))


def test_dump_writes_the_best_checkpoints_per_example_nlls(tiny_cfg, tmp_path):
    """--dump: the best checkpoint's NLL per dev example, own / shuffled / base with its user and task, so a design
    and its fair control trained on another machine can be compared pairwise afterwards."""
    from hypernet_onnx.train import main
    import numpy as np
    cfg = dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-dump", eval_every=2)
    path = tmp_path / "cfg.toml"
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in dataclasses.asdict(cfg).items() if v is not None))
    main(["--config", str(path), "--until", "4", "--dump", str(tmp_path / "dev.npz")])
    best = torch.load(Path(cfg.out_dir) / "best.pt", map_location="cpu", weights_only=False)
    rec = best["log"][-1]                                             # the evaluation that made it the best
    d = np.load(tmp_path / "dev.npz")
    assert int(d["step"]) == best["step"]
    tr = Trainer(cfg)
    exs = tr.splits["dev"].examples
    assert list(d["users"]) == [e.user for e in exs] and list(d["tasks"]) == [e.task for e in exs]
    for name in ("dev", "dev_shuffled", "dev_base"):                 # the logged means of that evaluation
        assert len(d[name]) == len(exs) and float(d[name].mean()) == pytest.approx(rec[name], abs=1e-5), name
    assert not np.allclose(d["dev"], d["dev_shuffled"])
    from hypernet_onnx.report import paired                          # two runs compared pairwise from their dumps
    (tmp_path / "control-dev.npz").write_bytes((tmp_path / "dev.npz").read_bytes())
    md = paired([tmp_path / "dev.npz", tmp_path / "control-dev.npz"])
    for t in ("headline", "writing"):
        p = rec["person"][t]
        row = next(line for line in md.splitlines() if line.startswith(f"| dev ({best['step']}) | {t} |"))
        assert f"| {p['gap']:+.4f} [{p['lo']:+.4f}, {p['hi']:+.4f}] | +0.0000 [+0.0000, +0.0000] |" in row, row


def test_dev_log_reports_the_person_metric(tiny_cfg):
    """Each evaluation logs, per task, shuffled - own NLL with a paired CI and the person share."""
    tr = Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-person"))
    for _ in range(3):
        tr.train_step()
    ev = tr.evaluate()
    assert set(ev["person"]) == {"headline", "writing"}
    for p in ev["person"].values():
        assert p["lo"] <= p["gap"] <= p["hi"]
    overall_gap = ev["dev_shuffled"] - ev["dev"]
    gaps = [ev["person"][t]["gap"] for t in ("headline", "writing")]
    assert min(gaps) - 1e-3 <= overall_gap <= max(gaps) + 1e-3     # the per-task gaps average to the overall one
    log = tr.run(until=tr.step + 1)                                  # evaluates and checkpoints at the stop
    from hypernet_onnx.report import table
    md = table([tr.out])
    row = next(line for line in md.splitlines() if line.startswith(f"| {tr.out.name} |"))
    assert f"| {log[-1]['step']} | {log[-1]['dev']:.4f} |" in row
    assert f"{log[-1]['person']['writing']['gap']:+.4f} [" in row
    assert row.endswith(f"| {log[-1]['chat_drift']:+.4f} |") and log[-1]["chat_drift"] != 0    # the chat guard


def test_residual_design_starts_at_the_shared_lora_and_keeps_it_for_the_average_person(tiny_cfg, tmp_path, spec):
    """issue 11: the adapter = a frozen mt-lora + a residual that is zero for the average profile."""
    mt_cfg = dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-mt", profile_input="zeros")
    mt = Trainer(mt_cfg)
    mt.run(until=6)
    mt_ckpt = Path(mt_cfg.out_dir) / "ckpt.pt"
    cfg = dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-residual", standardize=True,
                              shared_from=str(mt_ckpt))
    tr = Trainer(cfg)
    assert tr.hcfg.out_rank == 2 * tiny_cfg.rank
    with torch.no_grad():
        start, mt_eval = tr.evaluate(), mt.evaluate()
    assert start["dev"] == pytest.approx(mt_eval["dev"], abs=1e-5)          # p2p == mt-lora at the start
    assert start["dev_shuffled"] == pytest.approx(start["dev"], abs=1e-6)
    for _ in range(4):
        tr.train_step()
    tr.hyper.eval()
    r = tiny_cfg.rank
    with torch.no_grad():
        avg = tr.hyper(tr.hyper.in_mean[None])                               # the average person
        own = tr.hyper(torch.tensor(tr.profiles[tr.train_ids[0]])[None])
        mt_out = mt.hyper.eval()(torch.zeros(1, mt.hcfg.input_dim))
    for m in tiny_cfg.modules:
        a, b = avg[m]
        assert torch.equal(a[..., :r, :], mt_out[m][0]) and torch.equal(b[..., :r], mt_out[m][1])
        assert a[..., r:, :].abs().max() == 0 and b[..., r:].abs().max() == 0
        assert own[m][1][..., r:].abs().max() > 0                             # a real person moves the residual
    # mt-lora's weights stay frozen (the check above after 4 steps), only the residual network trains
    assert all(not p.requires_grad for p in tr.hyper.shared_parameters()) and tr.hyper.shared_parameters()
    # a checkpoint of the other design is refused on resume/init, never loaded partially
    with pytest.raises(SystemExit, match="another model config"):
        Trainer(dataclasses.replace(cfg, out_dir=tiny_cfg.out_dir + "-bad", init_from=str(mt_ckpt)))
    with pytest.raises(SystemExit, match="not an mt-lora run"):
        Trainer(dataclasses.replace(cfg, out_dir=tiny_cfg.out_dir + "-bad2", shared_from=str(tr.save("x.pt"))))
    # shared_frozen = false: the mt-lora's LoRA is where the shared part starts, and it trains on at shared_lr
    on = Trainer(dataclasses.replace(cfg, out_dir=tiny_cfg.out_dir + "-residual-on", shared_frozen=False,
                                     shared_lr=0.05))
    start = [p.detach().clone() for p in on.hyper.shared_parameters()]
    assert all(torch.equal(a, p) for a, p in zip(start, tr.hyper.shared_parameters()))     # tr's = the mt-lora's
    assert [g["lr_mult"] for g in on.opt.param_groups] == [1.0, pytest.approx(0.05 / tiny_cfg.lr)]
    for _ in range(2):
        on.train_step()
    assert all(p.requires_grad for p in on.hyper.shared_parameters())
    assert any(not torch.equal(a, p) for a, p in zip(start, on.hyper.shared_parameters()))


def test_joint_shared_lora_with_leave_one_out_profiles(tiny_cfg, sample_data, monkeypatch, tmp_path):
    """issue 11 on a GPU: a plain shared LoRA trained jointly with the residual (own lr), leave-one-out examples
    whose profile leaves their own item out, and token ids + profile vectors cached so a machine without the
    embedder trains from the files alone."""
    import numpy as np
    from app.profile import profile_vector
    from hypernet_onnx import data as D
    cache = tmp_path / "cache"
    monkeypatch.setattr(D, "CACHE_DIR", cache)
    real_embed = D.embed_users
    monkeypatch.setattr(D, "embed_users", lambda path, users, *a, **k: real_embed(path, users, *a, progress=False))
    cfg = dataclasses.replace(tiny_cfg, out_dir=str(tmp_path / "joint"), shared_rank=2, shared_lr=0.05,
                              standardize=True, loo=True)
    tr = Trainer(cfg, sample_data.parent)
    loo = [e for e in tr.train if e.profile]
    users = {u["user"]: u for u in D.load_users(sample_data, tiny_cfg.train_users)}
    assert len(loo) == 2 * sum(len(u["profile"]) for u in users.values())
    # the profile of a leave-one-out example is the app's vector of the other items' chunks
    ex = loo[2]
    u = users[ex.user]
    item = int(ex.profile.rsplit("loo", 1)[1])
    emb = D.embed_users(sample_data, [u], progress=False)[u["user"]]
    counts = [len(c) for c in D.item_chunks(u)]
    start = sum(counts[:item])
    rest = np.concatenate([emb[:start], emb[start + counts[item]:]]).astype(np.float32)
    assert np.allclose(tr.profiles[ex.profile], profile_vector(rest, "mean"), atol=1e-6)
    assert u["profile"][item]["title"] in (ex.target + ex.messages[0]["content"])
    # two groups, the shared LoRA's at its own lr; both move
    assert [g["lr_mult"] for g in tr.opt.param_groups] == [1.0, pytest.approx(0.05 / tiny_cfg.lr)]
    before = [p.detach().clone() for p in tr.hyper.shared_parameters()]
    tr.run(until=3)
    assert any(not torch.equal(a, p) for a, p in zip(before, tr.hyper.shared_parameters()))
    # the same config trains again from the cached files alone (no embedder, no re-tokenizing)
    assert sorted(f.name.split("-")[0] for f in cache.glob("*.npz")) == ["profiles", "tokens"]
    monkeypatch.setattr(D, "embed_users", lambda *a, **k: pytest.fail("profiles must come from the cache"))
    monkeypatch.setattr("hypernet_onnx.train.encode", lambda *a, **k: pytest.fail("tokens must come from the cache"))
    again = Trainer(dataclasses.replace(cfg, out_dir=str(tmp_path / "again")), sample_data.parent)
    assert again.train_items == tr.train_items
    # a zeroed profile makes the residual exactly zero: the control is a plain shared LoRA
    mt = Trainer(dataclasses.replace(cfg, out_dir=str(tmp_path / "mt"), profile_input="zeros", standardize=False),
                 sample_data.parent)
    with torch.no_grad():
        out = mt.hyper(torch.zeros(1, mt.hcfg.input_dim))
    for m in cfg.modules:
        assert out[m][0][..., 2:, :].abs().max() == 0 and out[m][1][..., 2:].abs().max() == 0


def test_rag_share_trains_on_the_loo_examples_after_their_retrieved_items(tiny_cfg, sample_data, monkeypatch,
                                                                          tmp_path):
    """rag_share: a seeded share of the leave-one-out examples is posed after the author's retrieved items (the
    app's retrieval over the other items), the rest bare; the retrievals are cached with the other files, so the
    GPU machine (no embedder) rebuilds the same examples from the data alone."""
    from hypernet_onnx import data as D
    from hypernet_onnx import rag_data as R
    monkeypatch.setattr(D, "CACHE_DIR", tmp_path / "cache")
    real_embed = D.embed_users
    monkeypatch.setattr(D, "embed_users", lambda path, users, *a, **k: real_embed(path, users, *a, progress=False))
    with pytest.raises(SystemExit, match="need loo"):
        Trainer(dataclasses.replace(tiny_cfg, out_dir=str(tmp_path / "noloo"), rag_share=0.5), sample_data.parent)
    cfg = dataclasses.replace(tiny_cfg, out_dir=str(tmp_path / "rag"), loo=True, rag_share=0.5, max_len=768)
    tr = Trainer(cfg, sample_data.parent)
    loo = [e for e in tr.train if e.profile]
    shown = [e for e in loo if len(e.messages) > 1]
    assert 0 < len(shown) < len(loo)
    users = {u["user"]: u for u in D.load_users(sample_data, tiny_cfg.train_users)}
    for e in shown:
        item = int(e.profile.rsplit("loo", 1)[1])
        titles = [m["content"] for m in e.messages if m["role"] == "assistant"] if e.task == "headline" else []
        assert users[e.user]["profile"][item]["title"] not in titles       # never its own item
    assert list((tmp_path / "cache").glob("rag-*.json"))
    tr.run(until=2)
    monkeypatch.setattr(R, "loo_retrievals", lambda *a, **k: pytest.fail("retrievals must come from the cache"))
    monkeypatch.setattr(D, "embed_users", lambda *a, **k: pytest.fail("profiles must come from the cache"))
    again = Trainer(dataclasses.replace(cfg, out_dir=str(tmp_path / "again")), sample_data.parent)
    assert [e.key() for e in again.train] == [e.key() for e in tr.train]


def test_rag_distill_pulls_bare_examples_toward_their_adapter_shown_the_retrieved_items(tiny_cfg, sample_data,
                                                                                         monkeypatch, tmp_path):
    """rag_distill: every bare leave-one-out example gets a teacher, the same example after the author's retrieved
    items under the example's own adapter (context distillation), and the loss adds KL(teacher || adapter) per
    answer token; no gradient flows through the teacher."""
    import numpy as np
    import torch.nn.functional as F
    from hypernet_onnx import data as D
    monkeypatch.setattr(D, "CACHE_DIR", tmp_path / "cache")
    real_embed = D.embed_users
    monkeypatch.setattr(D, "embed_users", lambda path, users, *a, **k: real_embed(path, users, *a, progress=False))
    cfg = dataclasses.replace(tiny_cfg, out_dir=str(tmp_path / "distill"), loo=True, rag_distill=1.0, max_len=768)
    tr = Trainer(cfg, sample_data.parent)
    assert all((t is not None) == bool(e.profile) for e, t in zip(tr.train, tr.teacher_items))   # queries: none
    rows = [i for i, e in enumerate(tr.train) if e.profile][:3]
    batch, items, teach = ([xs[i] for i in rows] for xs in (tr.train, tr.train_items, tr.teacher_items))
    assert all(len(t[0]) - t[1] == len(it[0]) - it[1] and len(t[0]) > len(it[0]) for t, it in zip(teach, items))
    tr.hyper.eval()                                          # no dropout: the definition below is deterministic
    with torch.no_grad():                                    # adapters away from zero (ΔW = 0 at init: teacher = base)
        for p in tr.hyper.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))

    def kl_row(ex, it, t, teacher_key):                      # one row at a time, no padding: the definition
        s, _, s_lm = tr.logits_under([ex.profile_key], [it])
        with torch.no_grad():
            b, _, b_lm = tr.logits_under(teacher_key, [t])
        q, p = F.log_softmax(s[0][s_lm[0] > 0], -1), F.log_softmax(b[0][b_lm[0] > 0], -1)
        return (p.exp() * (p - q)).sum(-1).mean()

    with torch.no_grad():
        got = float(tr.step_loss(batch, items, teach))
        plain = float(tr.losses(batch, items=items).mean())
        want = [float(kl_row(ex, it, t, [ex.profile_key])) for ex, it, t in zip(batch, items, teach)]
        base_teacher = [float(kl_row(ex, it, t, None)) for ex, it, t in zip(batch, items, teach)]
    assert min(want) > 0                                     # the items shown change the adapter's answer
    assert got == pytest.approx(plain + np.mean(want), rel=1e-4)
    assert got != pytest.approx(plain + np.mean(base_teacher), rel=1e-3)      # the test tells the teachers apart
    params = [p for p in tr.hyper.parameters() if p.requires_grad]
    grads = torch.autograd.grad(tr.step_loss(batch, items, teach), params, allow_unused=True)
    ref = tr.losses(batch, items=items).mean() + torch.stack([kl_row(*r, [r[0].profile_key])
                                                              for r in zip(batch, items, teach)]).mean()
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    for g, r in zip(grads, ref_grads):                       # the student alone is trained: no gradient via the teacher
        if r is not None:
            torch.testing.assert_close(g, r, rtol=2e-3, atol=1e-6)
    tr.hyper.train()
    tr.distill_seen.clear()
    tr.run(until=2)
    assert len(tr.distill_seen) == 2 and all(v > 0 for v in tr.distill_seen)     # logged, one per step


def _wide_data(tmp_path: Path) -> Path:
    from tests.conftest import wide_users, write_users
    return write_users(tmp_path / "wide.jsonl.gz", wide_users())


def test_request_profiles_condition_each_example_on_the_items_retrieved_for_its_request(tiny_cfg, monkeypatch,
                                                                                       tmp_path):
    """request_profiles (issue 11, P2P's per-request profile): a leave-one-out example is conditioned on the items
    the app retrieves for it from the author's other items, a query on those it retrieves from the author's items,
    and its shuffled twin on the same request put to the next author's items; all cached, so the GPU machine
    trains from the files alone; the export refuses such a run until the app makes an adapter per request."""
    import numpy as np
    from hypernet_onnx import data as D
    from hypernet_onnx import rag_data as R
    from hypernet_onnx.export import export
    monkeypatch.setattr(D, "CACHE_DIR", tmp_path / "cache")
    real_embed = D.embed_users
    monkeypatch.setattr(D, "embed_users", lambda path, users, *a, **k: real_embed(path, users, *a, progress=False))
    data = _wide_data(tmp_path)
    base = dataclasses.replace(tiny_cfg, train_data=str(data), dev_data=str(data), out_dir=str(tmp_path / "req"))
    with pytest.raises(SystemExit, match="needs loo"):
        Trainer(dataclasses.replace(base, request_profiles=True), data.parent)
    with pytest.raises(SystemExit, match="contrast"):
        Trainer(dataclasses.replace(base, request_profiles=True, loo=True, contrast=1.0), data.parent)
    cfg = dataclasses.replace(base, request_profiles=True, loo=True)
    tr = Trainer(cfg, data.parent)
    users = {u["user"]: u for u in D.load_users(data)}
    emb = real_embed(data, list(users.values()))
    assert tr.train and all(e.profile.endswith("/" + e.task) for e in tr.train)

    loo = [e for e in tr.train if "#loo" in e.profile]
    chosen = R.retrievals(data, [users[u] for u in sorted({e.user for e in loo})])
    for ex in loo[:6]:
        u, i = users[ex.user], int(ex.profile.split("#loo")[1].split("/")[0])
        idx = chosen[ex.user][f"{i}/{ex.task}"]
        assert i not in idx and 0 < len(idx) < len(u["profile"]) - 1       # a strict subset of the other items
        assert np.allclose(tr.profiles[ex.profile], D.items_vector(u, emb[ex.user], idx, "mean"), atol=1e-6)
        assert not np.allclose(tr.profiles[ex.profile], tr.profiles[D.loo_key(ex.user, i)], atol=1e-3)

    sp = tr.splits["dev"]
    assert len({e.profile for e in sp.examples}) == len(sp.examples)     # one profile per request
    for e in sp.examples:
        a, other = users[e.user], users[sp.shuffled[e.user]]
        got = R.request_table(data, [(a, a), (a, other)])
        own, theirs = got[(a["user"], a["user"])][f"0/{e.task}"], got[(a["user"], other["user"])][f"0/{e.task}"]
        assert len(own) == R.RAG_K < len(a["profile"])
        assert np.allclose(tr.profiles[e.profile], D.items_vector(a, emb[a["user"]], own, "mean"), atol=1e-6)
        assert np.allclose(tr.profiles[sp.shuffled_key(e)], D.items_vector(other, emb[other["user"]], theirs, "mean"),
                           atol=1e-6)
    with torch.no_grad():                                    # away from zero, so own and shuffled adapters differ
        for p in tr.hyper.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    r = tr.evaluate()
    assert r["dev"] != r["dev_shuffled"]
    tr.run(until=2)

    def fail(*a, **k):
        pytest.fail("request profiles must come from the cache")
    for mod, name in ((R, "loo_retrievals"), (R, "request_retrievals"), (D, "embed_users")):
        monkeypatch.setattr(mod, name, fail)
    again = Trainer(dataclasses.replace(cfg, out_dir=str(tmp_path / "again")), data.parent)
    assert [e.profile for e in again.train] == [e.profile for e in tr.train]
    assert all(np.array_equal(again.profiles[e.profile], tr.profiles[e.profile]) for e in tr.train)
    with pytest.raises(SystemExit, match="per-request profiles"):
        export(tr.out / "ckpt.pt", tmp_path / "req.onnx")
