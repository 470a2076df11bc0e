"""Tampered models (issue #5, promise 5): a modified base GGUF, hypernetwork or adapter, or one made for
another architecture, is refused with a clear message, never loaded half-way, never a crash; and the adapter
reader survives thousands of mutated files with nothing but AdapterError.

The bundled models are copied to tmp_path before anything is flipped; models/ and assets/ are never touched.
"""
from __future__ import annotations

import dataclasses
import random
import shutil
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from app.base_model import BaseSpec
from app.cli import cli
from app.core import Settings, Tailor
from app.hypernet import INTEGRITY_KEY, Hypernet, HypernetError, default_hypernet_path, stamp_integrity
from app.lora_gguf import AdapterError, LoraAdapter, read_adapter, validate, write_adapter
from app.models import DEFAULT_BASE, ModelError, verify_base_model
from tests.conftest import BASE_GGUF


def flip(path, offset=None, bit=0):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))
    return path


def one_line_error(result, *fragments):
    """A CLI failure: exit 1, one line on stderr starting with 'error:', no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for f in fragments:
        assert f.lower() in err.lower(), err
    return err


def cli_run(*args):
    return CliRunner().invoke(cli, list(args), obj={})


# --- base model ----------------------------------------------------------------------------------------

def test_bit_flipped_bundled_base_model_is_refused(tmp_path, home):
    copy = tmp_path / DEFAULT_BASE.filename           # same name as the bundled file: its pinned hash applies
    shutil.copyfile(BASE_GGUF, copy)
    assert verify_base_model(copy) == copy
    flip(copy, bit=3)
    with pytest.raises(ModelError, match="SHA-256"):
        verify_base_model(copy)

    from app.engine import Engine
    loads = Engine.loads
    t = Tailor(settings=Settings(model_path=str(copy)))
    try:
        with pytest.raises(ModelError, match="does not match its pinned SHA-256"):
            t.spec
        with pytest.raises(ModelError):
            t.engine
        assert not t.engine_loaded and Engine.loads == loads      # nothing was loaded half-way
    finally:
        t.close()
    one_line_error(cli_run("--model", str(copy), "ask", "hello"), "base model", "SHA-256")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_custom_base_model_is_refused(tmp_path, home, damage):
    bad = tmp_path / "my-model.gguf"                 # a user's own GGUF: no pinned hash, but it must parse
    if damage == "truncated":
        with open(BASE_GGUF, "rb") as f:
            bad.write_bytes(f.read(1 << 20))         # cut inside the tokenizer metadata
    else:
        bad.write_bytes(random.Random(0).randbytes(1 << 16))
    one_line_error(cli_run("--model", str(bad), "ask", "hello"), str(bad))


# --- hypernetwork ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    path = tmp_path_factory.mktemp("hyper") / "hypernet.onnx"
    shutil.copyfile(default_hypernet_path(), path)
    stamp_integrity(path)
    return path


def test_stamped_hypernet_loads_and_any_change_is_refused(stamped, spec, tmp_path):
    h = Hypernet(stamped, spec)
    assert len(h.meta[INTEGRITY_KEY]) == 64
    assert stamp_integrity(stamped) == h.meta[INTEGRITY_KEY]       # re-stamping is idempotent

    flipped = tmp_path / "flipped.onnx"
    shutil.copyfile(stamped, flipped)
    flip(flipped)                                                  # somewhere in the weights
    with pytest.raises(HypernetError, match="does not match its SHA-256"):
        Hypernet(flipped, spec)

    appended = tmp_path / "appended.onnx"
    extra = bytes([0x72, 8, 0x0A, 1]) + b"k" + bytes([0x12, 3]) + b"new"  # one more (valid) metadata entry
    appended.write_bytes(stamped.read_bytes() + extra)             # the stamp is no longer at the end
    with pytest.raises(HypernetError, match="modified"):
        Hypernet(appended, spec)


def test_garbage_and_foreign_hypernets_are_refused(tmp_path, spec):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(random.Random(1).randbytes(4096))
    with pytest.raises(HypernetError, match="cannot be loaded") as info:
        Hypernet(garbage, spec)
    assert "\n" not in str(info.value)

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(HypernetError):
        Hypernet(empty, spec)

    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(default_hypernet_path()))

    def variant(name, **changes):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        props = {p.key: p.value for p in m.metadata_props}
        props.pop(INTEGRITY_KEY, None)    # a foreign file, not a damaged copy: it carries no stamp of ours
        props.update({k: v for k, v in changes.items() if v is not None})
        for k in [k for k, v in changes.items() if v is None]:
            props.pop(k)
        del m.metadata_props[:]
        for k, v in props.items():
            m.metadata_props.add(key=k, value=v)
        path = tmp_path / name
        onnx.save(m, str(path))
        return path

    with pytest.raises(HypernetError, match="trained for another base model"):
        Hypernet(variant("other-base.onnx", base_fingerprint="0123456789abcdef"), spec)
    with pytest.raises(HypernetError, match="not a Tailor hypernetwork"):
        Hypernet(variant("no-format.onnx", format=None), spec)
    with pytest.raises(HypernetError, match=r"incomplete metadata \(missing key 'rank'\)"):
        Hypernet(variant("no-rank.onnx", rank=None), spec)
    with pytest.raises(HypernetError, match=r"incomplete metadata .*unknown modules \['lm_head'\]"):
        Hypernet(variant("bad-modules.onnx", target_modules="q_proj,lm_head"), spec)
    with pytest.raises(HypernetError, match="expects profiles embedded with intfloat/e5-small"):
        Hypernet(variant("other-embedder.onnx", embedder_id="intfloat/e5-small"), spec)
    with pytest.raises(HypernetError, match=r"incomplete metadata \(missing key 'embedder_id'\)"):
        Hypernet(variant("no-embedder.onnx", embedder_id=None), spec)


def test_cli_refuses_a_damaged_hypernet(tmp_path, home):
    doc = tmp_path / "note.txt"
    doc.write_text("I write short notes about compilers and gardens. " * 20)
    r = cli_run("import", "--no-adapt", str(doc))
    assert r.exit_code == 0, r.output
    garbage = tmp_path / "hyper.onnx"
    garbage.write_bytes(b"\x08\x07garbage" * 100)
    one_line_error(cli_run("--hypernet", str(garbage), "adapt"), "hypernetwork", str(garbage))
    assert not list((home / "adapters").glob("*.gguf"))           # no adapter from a broken hypernetwork


# --- adapters ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_adapter(tmp_path_factory, hypernet, spec):
    vec = np.random.default_rng(0).standard_normal(hypernet.input_dim).astype(np.float32)
    ad = hypernet.generate(vec / np.linalg.norm(vec))
    return write_adapter(ad, tmp_path_factory.mktemp("adapters") / "good.gguf", spec)


def test_tampered_and_foreign_adapters_are_refused(real_adapter, spec, tmp_path):
    good = read_adapter(real_adapter, spec)
    assert good.metadata["tensors_sha256"]

    tampered = tmp_path / "tampered.gguf"
    shutil.copyfile(real_adapter, tampered)
    flip(tampered, offset=real_adapter.stat().st_size - 4, bit=2)   # inside the last tensor's data
    with pytest.raises(AdapterError, match="SHA-256"):
        read_adapter(tampered, spec)

    other_arch = dataclasses.replace(spec, architecture="qwen2")
    qwen = write_adapter(LoraAdapter(dict(good.weights), good.alpha), tmp_path / "qwen2.gguf", other_arch)
    with pytest.raises(AdapterError, match="architecture 'qwen2'"):
        read_adapter(qwen, spec)

    other_model = dataclasses.replace(spec, tokenizer_sha="0" * 16)
    foreign = write_adapter(LoraAdapter(dict(good.weights), good.alpha), tmp_path / "foreign.gguf", other_model)
    with pytest.raises(AdapterError, match="made for another base model"):
        read_adapter(foreign, spec)

    small = dataclasses.replace(spec, n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128)
    rng = np.random.default_rng(0)
    w = {(0, "v_proj"): (rng.standard_normal((2, 64)).astype(np.float32),
                         rng.standard_normal((small.module_shape("v_proj")[0], 2)).astype(np.float32))}
    shaped = write_adapter(LoraAdapter(w, 2.0), tmp_path / "small.gguf", small)
    with pytest.raises(AdapterError):
        read_adapter(shaped, spec)

    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(real_adapter.read_bytes()[:5000])
    with pytest.raises(AdapterError):
        read_adapter(truncated, spec)


def test_engine_refuses_bad_adapters_without_half_loading(engine, real_adapter, spec, tmp_path):
    tampered = tmp_path / "tampered.gguf"
    shutil.copyfile(real_adapter, tampered)
    flip(tampered, offset=real_adapter.stat().st_size - 4)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + random.Random(2).randbytes(2000))
    prompt = engine.chat_prompt([{"role": "user", "content": "Name a colour."}])
    try:
        engine.set_adapter(real_adapter, 1.0)
        before = engine.complete(prompt, max_tokens=8).text
        for bad in (tampered, garbage, tmp_path / "missing.gguf"):
            with pytest.raises(AdapterError) as info:
                engine.set_adapter(bad, 1.0)
            assert "\n" not in str(info.value)
            assert engine.adapter_path == real_adapter                # the good one stays attached
        assert engine.complete(prompt, max_tokens=8).text == before   # and still in effect
    finally:
        engine.set_adapter(None)


def test_a_prompt_too_long_for_the_context_is_a_clear_error(engine):
    from app.engine import PromptTooLongError
    with pytest.raises(PromptTooLongError, match="shorten it") as info:
        engine.complete(engine.chat_prompt([{"role": "user", "content": "word " * 3000}]), max_tokens=4)
    assert "\n" not in str(info.value)


# --- fuzz: mutated adapter files ---------------------------------------------------------------------------

_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def header_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every integer/scalar in a GGUF header: version, counts, key/string lengths, value
    types, array counts, scalar values, tensor name lengths, dimension counts, dimensions, types, offsets."""
    out = [(4, 4), (8, 8), (16, 8)]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    off = 24

    def value(off, vtype):
        if vtype == 8:                                     # string
            out.append((off, 8))
            return off + 8 + struct.unpack_from("<Q", data, off)[0]
        if vtype == 9:                                     # array
            out.extend([(off, 4), (off + 4, 8)])
            itype, count = struct.unpack_from("<IQ", data, off)
            off += 12
            for _ in range(count):
                off = value(off, itype)
            return off
        out.append((off, _SCALAR_SIZE[vtype]))
        return off + _SCALAR_SIZE[vtype]

    for _ in range(n_kv):
        out.append((off, 8))
        off += 8 + struct.unpack_from("<Q", data, off)[0]
        out.append((off, 4))
        vtype = struct.unpack_from("<I", data, off)[0]
        off = value(off + 4, vtype)
    for _ in range(n_tensors):
        out.append((off, 8))
        off += 8 + struct.unpack_from("<Q", data, off)[0]
        out.append((off, 4))
        n_dims = struct.unpack_from("<I", data, off)[0]
        off += 4
        for _ in range(n_dims):
            out.append((off, 8))
            off += 8
        out.extend([(off, 4), (off + 4, 8)])
        off += 12
    return out


def mutate(data: bytes, fields: list[tuple[int, int]], rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:                                           # bit flips anywhere
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
    elif kind == 1:                                         # truncation
        b = b[:rng.randrange(len(b))]
    elif kind in (2, 3):                                    # a header field set to an interesting value
        off, size = rng.choice(fields)
        old = int.from_bytes(b[off:off + size], "little")
        top = (1 << 8 * size) - 1
        new = rng.choice([0, 1, 2, 3, 7, 8, 9, 13, old + 1, old - 1, old * 2, top, top >> 1, (top >> 1) + 1,
                          1 << 31, 0x7FC00000, 0xFF800000, rng.randrange(top + 1)]) & top
        b[off:off + size] = new.to_bytes(size, "little")
    else:                                                   # a run of bytes overwritten
        pos = rng.randrange(len(b))
        n = rng.randint(1, 64)
        b[pos:pos + n] = bytes([rng.choice([0, 0xFF, 0x41, rng.randrange(256)])]) * n
        b = b[:len(data)] if rng.random() < 0.5 else b
    return bytes(b)


def run_fuzz(good, spec, n, seed, tmp_path):
    data = good.read_bytes()
    fields = header_fields(data)
    rng = random.Random(seed)
    outcomes = {"refused": 0, "accepted": 0}
    for i in range(n):
        path = tmp_path / f"m{seed}-{i}.gguf"          # a new file each time (truncating in place is slow here)
        path.write_bytes(mutate(data, fields, rng))
        try:
            ad = read_adapter(path, spec)
        except AdapterError as exc:
            assert str(exc) and "\n" not in str(exc).strip(), str(exc)
            outcomes["refused"] += 1
        else:                                              # whatever is accepted is a valid adapter
            validate(ad, spec)
            outcomes["accepted"] += 1
    return outcomes


@pytest.mark.filterwarnings("ignore::RuntimeWarning")    # numpy overflow inside gguf on absurd offsets
def test_fuzzed_adapter_files_only_ever_raise_adapter_error(tmp_path, real_adapter, spec):
    tiny = BaseSpec("llama", n_layer=2, n_embd=8, n_head=2, n_head_kv=1, n_ff=16, n_vocab=32, tokenizer_sha="t")
    rng = np.random.default_rng(0)
    w = {}
    for layer in range(tiny.n_layer):
        for m in ("q_proj", "k_proj", "v_proj", "down_proj"):
            out_f, in_f = tiny.module_shape(m)
            w[(layer, m)] = (rng.standard_normal((2, in_f)).astype(np.float32),
                             rng.standard_normal((out_f, 2)).astype(np.float32))
    small = write_adapter(LoraAdapter(w, 4.0, {"hypernet_id": "fuzz"}), tmp_path / "small.gguf", tiny)
    read_adapter(small, tiny)

    outcomes = run_fuzz(small, tiny, 2400, seed=5, tmp_path=tmp_path)
    assert outcomes["refused"] > 2000, outcomes
    real = run_fuzz(real_adapter, spec, 40, seed=6, tmp_path=tmp_path)    # the real shapes, fewer (1.8 MB each)
    assert real["refused"] > 0, real
