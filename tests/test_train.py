"""The training loop on a tiny random llama: gradients flow, loss falls, checkpoints resume."""
import dataclasses
from pathlib import Path

import pytest
import torch

from hypernet_onnx.train import TrainConfig, Trainer

CONFIG = Path(__file__).resolve().parent.parent / "hypernet_onnx/configs/tiny.toml"


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    cfg = TrainConfig.load(CONFIG)
    return dataclasses.replace(cfg, out_dir=str(tmp_path_factory.mktemp("tiny")))


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


def test_embedding_cache_is_per_embedder_graph(tmp_path, monkeypatch):
    """Training must see what the app computes: another embedder graph never reuses a cached block."""
    import numpy as np
    from hypernet_onnx import data as D

    class Counting:
        calls = 0

        def embed(self, texts):
            Counting.calls += 1
            return np.zeros((len(texts), 384), np.float32)

    monkeypatch.setattr(D, "CACHE_DIR", tmp_path)
    path = D.DATA_DIR / "mlpapers-train.jsonl.gz"
    users = D.load_users(path, 1)
    D.embed_users(path, users, Counting(), progress=False)
    D.embed_users(path, users, Counting(), progress=False)
    assert Counting.calls == 1                                   # same graph: served from the cache
    monkeypatch.setattr("app.models.cached_sha256", lambda p: "another-graph-hash")
    D.embed_users(path, users, Counting(), progress=False)
    assert Counting.calls == 2 and len(list(tmp_path.iterdir())) == 2


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
    other = tr.others([ex.user for ex in batch])
    assert all(other[u] != u for u in other) and tr.others(list(other)) == other   # never oneself; resumable
    with torch.no_grad():
        own = tr.losses(batch)
        theirs = tr.losses(batch, lambda u: other[u])
        got = tr.step_loss(batch)
    assert not torch.allclose(own, theirs)        # another user's adapter really is another adapter
    # a margin this large keeps the hinge active on every example: own + (margin + own - theirs)
    assert float(got) == pytest.approx(float(own.mean() + (10.0 + own - theirs).mean()), rel=1e-5)
    tr.step_loss(batch).backward()
    assert tr.hyper.encoder[1].weight.grad.abs().sum() > 0
    plain = Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-plain"))
    with torch.no_grad():
        assert float(plain.step_loss(batch)) == pytest.approx(float(plain.losses(batch).mean()), rel=1e-6)
