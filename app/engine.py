"""llama.cpp inference with LoRA hot swap.

The base model is loaded once. A new adapter is attached to the live context
with ``llama_adapter_lora_init`` + ``llama_set_adapters_lora`` and the KV cache
is cleared (cached keys/values were computed under the old adapter); the
previous adapter is freed. Nothing reloads the base weights.
"""
from __future__ import annotations

import ctypes
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base_model import BaseSpec, read_base_spec
from .lora_gguf import AdapterError, read_adapter
from .models import ModelError
from .prompts import ANSWER_TOKENS, render_chat

# a logit bias (app.words): (token ids so far, one step's logits (V,)) -> logits, as llama-cpp-python calls a
# LogitsProcessor; one with ``needs_hidden`` (app.knn) takes the step's last hidden state (C,) as a third argument
Bias = Callable[..., np.ndarray]


def needs_hidden(bias: Bias | None) -> bool:
    return bool(getattr(bias, "needs_hidden", False))


class PromptTooLongError(ValueError):
    """The prompt (with history and retrieved passages) does not fit the context; a message for the person."""


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen (llama.cpp's samplers). ``temperature`` 0 is greedy: the engine's default,
    kept by the evaluation and the benchmarks; the app's chat defaults are chosen by measurement
    (app.core.CHAT_SAMPLING, README "Readable answers"). ``seed`` None with temperature > 0 draws a fresh seed."""
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0       # over the last 64 tokens (llama-cpp-python's last_n_tokens_size)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None


GREEDY = Sampling()


@dataclass
class Generation:
    text: str
    n_tokens: int
    first_token_ms: float
    tokens_per_s: float


class Engine:
    loads = 0   # how many times any Engine loaded a base model (tests check hot swap never reloads)

    def __init__(self, model_path: Path, *, spec: BaseSpec | None = None, n_ctx: int = 2048,
                 n_threads: int | None = None, n_gpu_layers: int = 0, logits_all: bool = False):
        """``spec``: the model's shapes when the caller has them already (the core reads them through its
        disk cache, which saves seconds at start); without it they are read here, for this process only."""
        import llama_cpp
        self._llama_cpp = llama_cpp
        self.model_path = Path(model_path)
        self.spec = spec if spec is not None else read_base_spec(self.model_path)
        threads = n_threads or max(1, os.cpu_count() or 1)
        try:    # prompt processing too (llama-cpp-python's n_threads_batch defaults to every core: two runs
            #     side by side with 1 thread each then ran 4 threads on 2 cores, ~3.5x slower: 153 vs 43 s a person)
            self.llm = llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=n_gpu_layers, logits_all=logits_all, verbose=False, seed=0)
        except (ValueError, RuntimeError, OSError) as exc:    # a damaged or incomplete GGUF
            raise ModelError(f"llama.cpp could not load the base model {self.model_path} ({exc}); "
                             "use the bundled model or a complete GGUF of the same architecture") from exc
        Engine.loads += 1
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        if not self.template:
            raise AdapterError(f"{self.model_path} has no chat template (tokenizer.chat_template)")
        self.eos = self.llm.token_eos()
        self._adapter = None            # llama_adapter_lora_p currently attached
        self.adapter_path: Path | None = None
        self.scale = 1.0
        self._lock = threading.RLock()  # one generation or swap at a time on this context
        self.stop_event = threading.Event()

    # --- adapters ---------------------------------------------------------
    def set_adapter(self, path: Path | None, scale: float | None = None) -> None:
        """Attach ``path`` (None detaches) to the live context; validated first, so a bad file never half-loads."""
        with self._lock:
            new = None
            if path is not None:
                read_adapter(Path(path), self.spec)   # raises AdapterError with a clear message
                new = self._llama_cpp.llama_adapter_lora_init(self.llm._model.model, str(path).encode())
                if not new:
                    raise AdapterError(f"llama.cpp refused the adapter {path}")
            old = self._adapter
            self._adapter, self.adapter_path = new, (Path(path) if path else None)
            if scale is not None:
                self.scale = scale
            self._apply()
            if old:
                self._llama_cpp.llama_adapter_lora_free(old)

    def set_scale(self, scale: float) -> None:
        with self._lock:
            self.scale = float(scale)
            self._apply()

    @contextmanager
    def detached(self):
        """The base model for the block (the adapter stays loaded and comes back at its strength after)."""
        with self._lock:
            scale = self.scale
            self.set_scale(0.0)
            try:
                yield self
            finally:
                self.set_scale(scale)

    def _apply(self) -> None:
        lc = self._llama_cpp
        if self._adapter and self.scale != 0.0:
            adapters = (lc.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            scales = (ctypes.c_float * 1)(self.scale)
            rc = lc.llama_set_adapters_lora(self.llm._ctx.ctx, adapters, 1, scales)
        else:
            rc = lc.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
        if rc != 0:
            raise AdapterError(f"llama.cpp could not set the adapter (code {rc})")
        self._clear_cache()

    def _clear_cache(self) -> None:
        mem = self._llama_cpp.llama_get_memory(self.llm._ctx.ctx)
        if mem is not None:
            self._llama_cpp.llama_memory_clear(mem, True)
        self.llm.reset()
        self.llm.n_tokens = 0

    # --- text -------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        """Tokens the context holds: prompt and answer together."""
        return self.llm.n_ctx()

    def chat_prompt(self, messages: list[dict]) -> str:
        return render_chat(self.template, messages, add_generation_prompt=True)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """``special`` False for a person's text: a "<|im_end|>" written in a document is text, not a turn's end."""
        return self.llm.tokenize(text.encode(), add_bos=False, special=special)

    def stream(self, prompt: str, *, max_tokens: int = ANSWER_TOKENS, seed: int | None = None,
               temperature: float | None = None, sampling: Sampling | None = None,
               usage: dict | None = None, bias: Bias | None = None) -> Iterator[str]:
        """Yield text pieces. ``sampling`` decides; without it, greedy unless a seed or temperature is given.
        ``usage``, if given, is filled with the prompt's and the answer's token counts as they are known (an API
        reports them; re-tokenizing the answer text would not give the tokens generated). ``bias``: (token ids so
        far, logits (V,)) -> logits, applied to each step's logits before any sampler (app.words: the person's
        words)."""
        if sampling is None:
            t = temperature if temperature is not None else (0.7 if seed is not None else 0.0)
            sampling = Sampling(temperature=t, seed=seed)
        s = sampling
        with self._lock:
            self.stop_event.clear()
            self._clear_cache()
            tokens = self.tokenize(prompt)
            if usage is not None:
                usage.update(prompt_tokens=len(tokens), completion_tokens=0)
            budget = self.llm.n_ctx() - len(tokens)
            if budget <= 0:
                raise PromptTooLongError(f"the prompt is {len(tokens)} tokens; the model's context holds "
                                         f"{self.llm.n_ctx()}: shorten it (or ask with fewer passages, --k)")
            if s.temperature > 0:
                self.llm.set_seed(s.seed if s.seed is not None else secrets.randbits(31))
            processor = bias
            if needs_hidden(bias):
                # the prompt but its last token decoded with embeddings off (on, llama.cpp would output every
                # prompt token); generate then finds that prefix cached and decodes the rest with them on
                self.llm.eval(tokens[:-1])
                self._embeddings(True)
                processor = lambda ids, logits: bias(ids, logits, self._hidden(-1))     # noqa: E731
            pending = b""
            try:
                for i, tok in enumerate(self.llm.generate(
                        tokens, temp=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                        repeat_penalty=s.repeat_penalty, presence_penalty=s.presence_penalty,
                        frequency_penalty=s.frequency_penalty, reset=True,
                        logits_processor=None if processor is None else [processor])):
                    if tok == self.eos or self.stop_event.is_set() or i >= min(max_tokens, budget):
                        break
                    if usage is not None:
                        usage["completion_tokens"] += 1
                    pending += self.llm.detokenize([tok], special=False)
                    try:
                        piece, pending = pending.decode("utf-8"), b""
                    except UnicodeDecodeError:
                        continue  # a multi-byte character split over tokens: wait for the rest
                    yield piece
            finally:
                if processor is not bias:
                    self._embeddings(False)

    def complete(self, prompt: str, **kw) -> Generation:
        t0 = time.perf_counter()
        first = None
        parts = []
        for piece in self.stream(prompt, **kw):
            if first is None:
                first = time.perf_counter()
            parts.append(piece)
        end = time.perf_counter()
        n = len(parts)
        tps = (n - 1) / (end - first) if first and n > 1 and end > first else 0.0
        return Generation("".join(parts).strip(), n, ((first or end) - t0) * 1000, tps)

    def stop(self) -> None:
        self.stop_event.set()

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Logits for every position (needs ``logits_all=True``); for correctness tests and NLL."""
        with self._lock:
            self._clear_cache()
            self.llm.eval(tokens)
            return np.array(self.llm.scores[:len(tokens)], dtype=np.float32)

    def _embeddings(self, on: bool) -> None:
        self._llama_cpp.llama_set_embeddings(self.llm._ctx.ctx, on)

    def _hidden(self, i: int) -> np.ndarray:
        """(C,) the last hidden state (after the final norm) of output ``i`` of the last decode (embeddings on)."""
        ptr = self._llama_cpp.llama_get_embeddings_ith(self.llm._ctx.ctx, i)
        if not ptr:
            raise RuntimeError(f"llama.cpp holds no hidden state for output {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.spec.n_embd,)).copy()

    def hidden_states(self, prompt_tokens: list[int], target_tokens: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """(hidden (T, C), logits (T, V) or None without ``logits_all``) at the positions that predict each target
        token, under the current adapter: the prompt but its last token decoded with embeddings off, the rest
        with them on (llama.cpp then outputs every token of a batch)."""
        with self._lock:
            self._clear_cache()
            self.llm.eval(prompt_tokens[:-1])
            rest = prompt_tokens[-1:] + target_tokens[:-1]
            hidden = []
            self._embeddings(True)
            try:
                for i in range(0, len(rest), self.llm.n_batch):
                    chunk = rest[i:i + self.llm.n_batch]
                    self.llm.eval(chunk)
                    hidden += [self._hidden(j) for j in range(len(chunk))]
            finally:
                self._embeddings(False)
            n = len(prompt_tokens)
            logits = (np.array(self.llm.scores[n - 1:n - 1 + len(rest)], dtype=np.float32)
                      if self.llm._logits_all else None)
            return np.stack(hidden), logits

    def nll(self, prompt_tokens: list[int], target_tokens: list[int],
            bias: Bias | None = None) -> float:
        """Mean negative log-likelihood per target token, under the current adapter (and ``bias``, as stream
        applies it)."""
        if needs_hidden(bias):
            hidden, logits = self.hidden_states(prompt_tokens, target_tokens)
            step = lambda ids, row, i: bias(ids, row, hidden[i])                       # noqa: E731
        else:
            logits = self.logits(prompt_tokens + target_tokens)[len(prompt_tokens) - 1:-1]
            step = lambda ids, row, i: bias(ids, row)                                  # noqa: E731
        if bias is not None:        # each step sees the tokens before it, as in decoding
            ids = np.asarray(prompt_tokens + target_tokens, dtype=np.intc)
            logits = np.stack([step(ids[:len(prompt_tokens) + i], row, i) for i, row in enumerate(logits)])
        logits = logits.astype(np.float64)
        logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        return float(np.mean(logz - logits[np.arange(len(target_tokens)), target_tokens]))
