"""A generated adapter does in llama.cpp what the same LoRA does in torch (HF layout, PEFT).

Compares the *change* in logits caused by the adapter: llama.cpp (quantized
base + GGUF LoRA) versus torch (the same GGUF dequantized + PEFT LoRA). Writing
the adapter without llama.cpp's q/k rope permutation must fail the same check.
"""
import numpy as np
import pytest
import torch

from app.lora_gguf import write_adapter
from app.profile import profile_vector
from tests.conftest import BASE_GGUF, SAMPLES

THRESHOLD = 0.95


@pytest.fixture(scope="module")
def setup(spec, hypernet, embedder, tmp_path_factory):
    from app.chunking import chunk_document
    from app.engine import Engine
    from app import ingest
    chunks = [c for p in sorted(SAMPLES.glob("*/*.md")) for c in chunk_document(*_read(p, ingest))]
    adapter = hypernet.generate(profile_vector(embedder.embed(chunks), hypernet.pooling))
    d = tmp_path_factory.mktemp("adapters")
    good = write_adapter(adapter, d / "good.gguf", spec)
    bad = write_adapter(adapter, d / "unpermuted.gguf", spec, permute_qk=False)
    eng = Engine(BASE_GGUF, n_ctx=256, logits_all=True)
    prompt = eng.chat_prompt([{"role": "user", "content": "Write a paragraph about what you care about most."}])
    tokens = eng.tokenize(prompt + "I care about clear writing, careful experiments and open source software.")
    eng.set_adapter(None)
    base = eng.logits(tokens)
    eng.set_adapter(good)
    with_good = eng.logits(tokens)
    eng.set_adapter(bad)
    with_bad = eng.logits(tokens)
    return adapter, tokens, base, with_good, with_bad


def _read(path, ingest):
    doc = ingest.extract(path)
    return doc.title, doc.text


def _torch_delta(adapter, tokens):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(BASE_GGUF.parent, gguf_file=BASE_GGUF.name, dtype=torch.float32).eval()
    ids = torch.tensor([tokens])
    with torch.no_grad():
        base = model(ids).logits[0].numpy()
    modules = sorted({m for _, m in adapter.weights})
    peft_model = get_peft_model(model, LoraConfig(r=adapter.rank, lora_alpha=adapter.alpha, lora_dropout=0.0,
                                                  target_modules=modules))
    with torch.no_grad():
        for (layer, m), (a, b) in adapter.weights.items():
            proj = getattr(peft_model.base_model.model.model.layers[layer].self_attn, m)
            proj.lora_A["default"].weight.copy_(torch.from_numpy(a))
            proj.lora_B["default"].weight.copy_(torch.from_numpy(b))
            # PEFT's get_delta_weight is the one source of truth for what the adapter means
            assert np.allclose(proj.get_delta_weight("default").numpy(), adapter.delta(layer, m), atol=1e-5)
        lora = peft_model(ids).logits[0].numpy()
    return lora - base


def _corr(x, y):
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


def test_llamacpp_matches_torch_and_permutation_is_needed(setup):
    adapter, tokens, base, with_good, with_bad = setup
    torch_delta = _torch_delta(adapter, tokens)
    assert np.abs(torch_delta).max() > 0.05, "the adapter must change the logits for this test to mean anything"
    good = _corr(with_good - base, torch_delta)
    bad = _corr(with_bad - base, torch_delta)
    print(f"correlation with q/k permutation {good:.4f}, without {bad:.4f}")
    assert good >= THRESHOLD
    assert bad < THRESHOLD
