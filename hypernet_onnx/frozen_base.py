"""The frozen base model, as both trainers use it: load it, turn examples into token ids, batch them, score the answers.

The hypernetwork (train.py) and the per-user LoRA baseline (oppu.py) differ
only in where the LoRA comes from; what they train through is the same, so it
is here once. The base model is the same GGUF users run, dequantized by
transformers (or, for tests, a tiny random llama with its tokenizer); prompts
are rendered with the GGUF's own chat template by the app's render_chat, so
training sees the prompts the app sends; the loss is cross-entropy on the
answer tokens only, mean per example, so short headlines count as much as long
abstracts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from app.base_model import BaseSpec
from hypernet_onnx import data as D

if TYPE_CHECKING:
    from hypernet_onnx.train import TrainConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")      # local files only, as in train.py and evaluate.py
REPO = Path(__file__).resolve().parent.parent


def load_base(cfg: TrainConfig):
    """(model, tokenizer, chat_template, BaseSpec) with frozen weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from app.base_model import read_base_spec
    gguf_path = REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf" if cfg.base_gguf == "tiny-random" else REPO / cfg.base_gguf
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    spec = read_base_spec(gguf_path)
    import gguf as G
    template = G.GGUFReader(str(gguf_path)).fields["tokenizer.chat_template"].contents()
    if cfg.base_gguf == "tiny-random":
        from transformers import LlamaConfig, LlamaForCausalLM
        torch.manual_seed(cfg.seed)
        mc = LlamaConfig(vocab_size=spec.n_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
        model = LlamaForCausalLM(mc)
        spec = BaseSpec("llama", 2, 64, 4, 2, 128, spec.n_vocab, spec.tokenizer_sha)
    else:
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok, template, spec


# --- batches ---------------------------------------------------------------------
def encode(tok, template: str, ex: D.Example, max_len: int) -> tuple[list[int], int]:
    """Token ids of prompt+answer and the prompt length. Long inputs are cut inside the text, not the template:
    first the request's abstract (a headline's input), then the retrieved examples before the request, least
    relevant (first) first, so the answer survives whole where it can."""
    from app.prompts import render_chat
    target = tok(ex.target + "<|im_end|>", add_special_tokens=False)["input_ids"]
    msgs = ex.messages
    prompt = tok(render_chat(template, msgs), add_special_tokens=False)["input_ids"]
    words = msgs[-1]["content"].split(" ")
    while len(prompt) + len(target) > max_len and ((ex.task == "headline" and len(words) > 20) or len(msgs) > 1):
        if ex.task == "headline" and len(words) > 20:
            words = words[: int(len(words) * 0.85)]
        else:
            msgs = msgs[2:]                 # one example: its request and its answer
        prompt = tok(render_chat(template, msgs[:-1] + [{"role": "user", "content": " ".join(words)}]),
                     add_special_tokens=False)["input_ids"]
    ids = (prompt + target)[:max_len]
    return ids, len(prompt)


def collate(items: list[tuple[list[int], int]], pad: int):
    T = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), T), pad, dtype=torch.long)
    mask = torch.zeros((len(items), T), dtype=torch.long)
    loss_mask = torch.zeros((len(items), T), dtype=torch.float32)
    for i, (ids, n_prompt) in enumerate(items):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(ids)] = 1
        loss_mask[i, n_prompt:len(ids)] = 1.0        # answer tokens (incl. <|im_end|>)
    return input_ids, mask, loss_mask


def example_losses(model, input_ids, mask, loss_mask) -> torch.Tensor:
    """Mean NLL of the answer tokens, one value per example: (B,)."""
    return answer_nll(*next_token_logits(model, input_ids, mask, loss_mask))


def next_token_logits(model, input_ids, mask, loss_mask):
    """(logits (B, A, V), the tokens they predict (B, A), answer mask (B, A)): only where an answer token is
    predicted, each row's answer left-aligned, A its longest answer. The LM head (49k x 576, a fifth of the
    model) and the softmax over it at every prompt position cost a fifth of a CPU training step: a headline's
    prompt is an abstract of ~200 tokens for an answer of ~15 (scripts/bench_answer_logits.py, batch 4 of
    leave-one-out examples, 2 threads: 4.0-4.3 s a step against 5.4-5.5 s, the same loss to 1e-6). Every
    consumer reads logits through the mask."""
    h = model.get_decoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state[:, :-1]   # (B, T-1, C)
    lm = loss_mask[:, 1:]                                        # (B, T-1) position t predicts token t+1
    n = (lm > 0).sum(1)                                          # (B,) answer tokens, contiguous (collate)
    start = (lm > 0).int().argmax(1)                             # (B,) where each answer starts (0 if none)
    A = max(int(n.max()), 1)
    offs = torch.arange(A, device=h.device)
    pos = (start[:, None] + offs[None]).clamp(max=h.shape[1] - 1)    # (B, A)
    valid = offs[None] < n[:, None]                              # (B, A)
    picked = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))[valid]        # (N, C) answer positions only
    flat = model.get_output_embeddings()(picked)                 # (N, V)
    logits = flat.new_zeros(*valid.shape, flat.shape[-1])        # (B, A, V)
    logits[valid] = flat
    return logits, input_ids[:, 1:].gather(1, pos), lm.gather(1, pos) * valid


def answer_nll(logits, tgt, lm) -> torch.Tensor:
    nll = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")       # (B, T-1)
    return (nll * lm).sum(1) / lm.sum(1).clamp(min=1)
