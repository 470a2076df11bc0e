"""The answer-only logits every trainer and scorer reads: the full forward's, at the answer positions only."""
import dataclasses

import torch
import torch.nn.functional as F

from hypernet_onnx.frozen_base import answer_nll, collate, next_token_logits
from hypernet_onnx.train import Trainer


def test_answer_logits_are_the_full_forwards_at_the_answer_positions(tiny_cfg):
    tr = Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-logits"))
    with torch.no_grad():                        # adapters away from zero, so the LoRA path is in the comparison
        for p in tr.hyper.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    tasks = {ex.task for ex in tr.train[:6]}
    assert tasks == {"headline", "writing"}      # short and long answers, long and short prompts, in one batch
    ids, n = tr.train_items[0]
    items = tr.train_items[:6] + [(ids, len(ids))]     # and a row whose answer max_len cut away entirely
    keys = [ex.profile_key for ex in tr.train[:6]] + [tr.train[0].profile_key]
    with torch.no_grad():
        logits, tgt, lm = tr.logits_under(keys, items)
        input_ids, mask, loss_mask = collate(items, tr.tok.pad_token_id or 0)
        full = tr.model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]          # (B, T-1, V)
    answer = loss_mask[:, 1:] > 0
    assert logits.shape[1] == int(answer.sum(1).max()) < full.shape[1]
    for i in range(len(items)):
        assert torch.allclose(logits[i][lm[i] > 0], full[i][answer[i]], atol=1e-5), i
        assert torch.equal(tgt[i][lm[i] > 0], input_ids[i, 1:][answer[i]]), i
    assert lm[-1].sum() == 0
    want = (F.cross_entropy(full.transpose(1, 2), input_ids[:, 1:], reduction="none") * loss_mask[:, 1:]).sum(1) \
        / loss_mask[:, 1:].sum(1).clamp(min=1)
    assert torch.allclose(answer_nll(logits, tgt, lm), want, atol=1e-5)


def test_answer_logits_through_a_peft_model(tiny_cfg):
    """oppu.py trains through a PEFT wrapper: the decoder and head are found through it too."""
    from peft import LoraConfig, get_peft_model
    tr = Trainer(dataclasses.replace(tiny_cfg, out_dir=tiny_cfg.out_dir + "-peft"))
    model = get_peft_model(tr.model, LoraConfig(r=2, target_modules=["o_proj"], init_lora_weights=False))
    items = tr.train_items[:3]
    input_ids, mask, loss_mask = collate(items, tr.tok.pad_token_id or 0)
    with torch.no_grad():
        logits, tgt, lm = next_token_logits(model, input_ids, mask, loss_mask)
        full = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
    for i in range(len(items)):
        assert torch.allclose(logits[i][lm[i] > 0], full[i][loss_mask[i, 1:] > 0], atol=1e-5), i
