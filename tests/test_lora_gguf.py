"""GGUF LoRA writer/reader: PEFT layout round trip, rope permutation, validation."""
import numpy as np
import pytest

from app.lora_gguf import (AdapterError, LoraAdapter, read_adapter, rope_permute, rope_unpermute, validate,
                           write_adapter)


def random_adapter(spec, rank=4, modules=("q_proj", "k_proj", "v_proj"), seed=0):
    rng = np.random.default_rng(seed)
    w = {}
    for layer in range(spec.n_layer):
        for m in modules:
            out_f, in_f = spec.module_shape(m)
            w[(layer, m)] = (rng.standard_normal((rank, in_f)).astype(np.float32),
                             rng.standard_normal((out_f, rank)).astype(np.float32))
    return LoraAdapter(w, alpha=8.0, metadata={"hypernet_id": "test"})


def test_permutation_is_a_row_permutation_and_invertible():
    w = np.arange(576 * 3, dtype=np.float32).reshape(576, 3)
    p = rope_permute(w, 9)
    assert not np.array_equal(p, w)
    assert sorted(map(tuple, p)) == sorted(map(tuple, w))
    assert np.array_equal(rope_unpermute(p, 9), w)


def test_round_trip_gives_peft_layout_back(tmp_path, spec):
    ad = random_adapter(spec)
    path = write_adapter(ad, tmp_path / "a.gguf", spec)
    back = read_adapter(path, spec)
    assert back.alpha == 8.0 and back.rank == 4
    assert back.metadata["hypernet_id"] == "test"
    assert back.metadata["base_fingerprint"] == spec.fingerprint()
    for key, (a, b) in ad.weights.items():
        assert np.array_equal(back.weights[key][0], a)
        assert np.array_equal(back.weights[key][1], b)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_file_holds_llamacpp_layout(tmp_path, spec):
    import gguf
    ad = random_adapter(spec)
    path = write_adapter(ad, tmp_path / "a.gguf", spec)
    r = gguf.GGUFReader(str(path))
    f = {k: v.contents() for k, v in r.fields.items()}
    assert f["general.type"] == "adapter" and f["adapter.type"] == "lora"
    assert f["general.architecture"] == spec.architecture and f["adapter.lora.alpha"] == 8.0
    t = {x.name: x for x in r.tensors}
    qa, qb = t["blk.0.attn_q.weight.lora_a"], t["blk.0.attn_q.weight.lora_b"]
    assert list(qa.shape) == [spec.n_embd, 4] and list(qb.shape) == [4, spec.n_embd]   # ggml ne order
    stored_b = np.array(qb.data).reshape(spec.n_embd, 4)
    assert np.array_equal(stored_b, rope_permute(ad.weights[(0, "q_proj")][1], spec.n_head))
    stored_kb = np.array(t["blk.0.attn_k.weight.lora_b"].data).reshape(-1, 4)
    assert np.array_equal(stored_kb, rope_permute(ad.weights[(0, "k_proj")][1], spec.n_head_kv))
    stored_vb = np.array(t["blk.0.attn_v.weight.lora_b"].data).reshape(-1, 4)
    assert np.array_equal(stored_vb, ad.weights[(0, "v_proj")][1])             # v is not rotated


def test_validation_rejects_bad_adapters(spec):
    ad = random_adapter(spec, modules=("q_proj",))
    ad.weights[(3, "q_proj")] = (ad.weights[(3, "q_proj")][0], np.full((576, 4), np.nan, np.float32))
    with pytest.raises(AdapterError, match="NaN"):
        validate(ad, spec)
    ad = random_adapter(spec, modules=("v_proj",))
    ad.weights[(0, "v_proj")] = (ad.weights[(0, "v_proj")][0], np.zeros((576, 4), np.float32))
    with pytest.raises(AdapterError, match="shapes"):
        validate(ad, spec)
    ad = random_adapter(spec, modules=("q_proj",))
    ad.weights[(99, "q_proj")] = ad.weights[(0, "q_proj")]
    with pytest.raises(AdapterError, match="layer 99"):
        validate(ad, spec)


def test_reader_refuses_other_architecture_and_non_adapters(tmp_path, spec):
    from dataclasses import replace
    other = replace(spec, architecture="gemma3")
    ad = random_adapter(spec, modules=("q_proj",))
    path = write_adapter(ad, tmp_path / "a.gguf", spec)
    with pytest.raises(AdapterError, match="architecture"):
        read_adapter(path, other)
    from tests.conftest import BASE_GGUF
    with pytest.raises(AdapterError, match="not a LoRA adapter"):
        read_adapter(BASE_GGUF, spec)
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\x00" * 50)
    with pytest.raises(AdapterError):
        read_adapter(tmp_path / "junk.gguf", spec)


def test_failed_write_leaves_previous_file(tmp_path, spec):
    good = write_adapter(random_adapter(spec, modules=("q_proj",)), tmp_path / "a.gguf", spec)
    before = good.read_bytes()
    bad = random_adapter(spec, modules=("q_proj",))
    bad.weights[(0, "q_proj")] = (bad.weights[(0, "q_proj")][0] * np.inf, bad.weights[(0, "q_proj")][1])
    with pytest.raises(AdapterError):
        write_adapter(bad, good, spec)
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.gguf"]      # no temp file left behind

