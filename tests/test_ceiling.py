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
