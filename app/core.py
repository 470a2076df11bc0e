"""The headless core: ingest -> store -> embed -> hypernet -> adapter -> engine.

The CLI and the Qt app are thin layers over ``Tailor``. Models load lazily
(the embedder on the first import or retrieval, the base model on the first
answer), each exactly once per process.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


from . import ingest, offline, retrieval
from .base_model import BaseSpec, read_base_spec
from .chunking import chunk_document
from .embed import embed_chunks
from .engine import GREEDY, Sampling
from .log import close_logging, log, setup_logging
from .lora_gguf import AdapterError, LoraAdapter, now_iso, read_adapter, write_adapter
from .models import DEFAULT_BASE, sha256_file, verify_base_model
from .paths import PROFILES_DIR, data_dir, ensure_private_dir
from .profile import profile_vector
from .sandbox import EXTRACT_TIMEOUT_S, Extractor
from .prompts import parse_task, trim_history, with_context, with_examples
from .store import Store

KEEP_ADAPTERS = 5
# Chat and ask decode with these unless greedy is asked for. Greedy decoding made the personalized answers loop
# (issue 13); chosen by `tailor quality` on assets/prompts/chat-quality.jsonl (README "Readable answers").
CHAT_SAMPLING = Sampling(temperature=0.7, repeat_penalty=1.1)
MAX_PROFILE_CHUNKS = 200_000     # documented profile limit (README); beyond it imports are refused per file


class TailorError(RuntimeError):
    """An expected failure with a message for the person (no traceback)."""


@dataclass
class Settings:
    model_path: str | None = None      # None: the bundled SmolLM2-135M-Instruct Q4_1
    hypernet_path: str | None = None   # None: assets/hypernet/hypernet.onnx
    threads: int = 0                   # 0: all cores
    gpu_layers: int = 0
    rag_k: int = retrieval.DEFAULT_K
    rag: bool = False
    use_adapter: bool = True
    scale: float = 1.0
    greedy: bool = False               # chat and ask sample (CHAT_SAMPLING) unless this is set
    seed: int | None = None            # a fixed seed makes sampled answers reproducible; None: a fresh one each
    watched: list[str] = field(default_factory=list)
    extract_timeout_s: float = EXTRACT_TIMEOUT_S   # per-file limit for reading one document (sandbox.py)

    @classmethod
    def load(cls, path: Path) -> "Settings":
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return cls()     # a damaged settings file falls back to defaults rather than blocking the app

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(path)


@dataclass
class ImportSummary:
    imported: int = 0
    unchanged: int = 0
    duplicates: int = 0
    failed: list[dict] = field(default_factory=list)
    cancelled: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Answer:
    text: str
    adapter_version: int | None
    sources: list[dict]
    first_token_ms: float = 0.0
    tokens_per_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


file_sha256 = sha256_file     # module-level name so tests can simulate an unreadable file


class Tailor:
    def __init__(self, home: Path | None = None, settings: Settings | None = None):
        self.home = ensure_private_dir(Path(home)) if home else data_dir()
        self.adapter_dir = ensure_private_dir(self.home / "adapters")
        self.log_path = setup_logging(self.home)
        self.settings_path = self.home / "settings.json"
        self.settings = settings or Settings.load(self.settings_path)
        self.store = Store(self.home / "tailor.db")
        self._embedder = None
        self._hypernet = None
        self._engine = None
        self._spec = None
        self._other_embeddings_dropped = False    # once per process: an embedder upgrade means a restart
        self._lock = threading.RLock()    # model objects are built once, whichever thread asks first
        self._extractor: Extractor | None = None
        offline.force_offline()
        self._sweep_adapter_dir()

    def close(self) -> None:
        if self._extractor is not None:
            self._extractor.close()
        self.store.close()

    @property
    def extractor(self) -> Extractor:
        """Documents are read in a separate, memory- and time-limited process (app/sandbox.py)."""
        with self._lock:
            if self._extractor is None:
                self._extractor = Extractor(timeout_s=self.settings.extract_timeout_s)
            return self._extractor

    def _sweep_adapter_dir(self, min_age_s: float = 300.0) -> None:
        """Delete what a killed process left in adapters/: half-written temp files and adapter files that
        are not registered (written but never registered, or unregistered but not yet unlinked). Files
        younger than ``min_age_s`` are left alone: another process may be writing them right now."""
        known = {Path(a["path"]).name for a in self.store.adapters()}
        now = time.time()
        for p in self.adapter_dir.iterdir():
            try:
                if p.name in known or now - p.stat().st_mtime < min_age_s:
                    continue
                if p.name.endswith(".tmp") or (p.name.startswith("adapter-") and p.suffix == ".gguf"):
                    p.unlink()
                    log.info("removed leftover adapter file %s", p.name)
            except OSError as exc:
                log.warning("could not sweep %s: %s", p, exc)

    def save_settings(self) -> None:
        self.settings.save(self.settings_path)

    # --- lazily loaded models ----------------------------------------------------
    @property
    def model_path(self) -> Path:
        return verify_base_model(Path(self.settings.model_path) if self.settings.model_path else None)

    @property
    def spec(self) -> BaseSpec:
        with self._lock:
            if self._spec is None:
                self._spec = read_base_spec(self.model_path, cache_file=self.home / "cache" / "gguf-specs.json")
            return self._spec

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from .embed import Embedder
                self._embedder = Embedder(threads=self.settings.threads or None)
                offline.force_offline()       # onnxruntime is loaded now: switch its telemetry off
            return self._embedder

    @property
    def hypernet(self):
        with self._lock:
            if self._hypernet is None:
                from .hypernet import Hypernet
                hp = Path(self.settings.hypernet_path) if self.settings.hypernet_path else None
                self._hypernet = Hypernet(hp, self.spec, threads=self.settings.threads or None)
                offline.force_offline()
            return self._hypernet

    @property
    def engine(self):
        with self._lock:
            if self._engine is None:
                from .engine import Engine
                eng = Engine(self.model_path, spec=self.spec, n_threads=self.settings.threads or None,
                             n_gpu_layers=self.settings.gpu_layers)
                latest = self.latest_adapter()
                if latest is not None:
                    try:
                        eng.set_adapter(Path(latest["path"]), self.settings.scale)
                    except AdapterError:     # answers run without it until the next adapt
                        log.warning("the latest adapter %s is damaged; answering without it", latest["path"],
                                    exc_info=True)
                self._engine = eng
            return self._engine

    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None

    # --- import ------------------------------------------------------------------
    def import_paths(self, paths: Iterable[Path], progress: Callable[[int, int, str], None] | None = None,
                     cancel: threading.Event | None = None) -> ImportSummary:
        """Import files and folders; one bad file fails alone and nothing stored is lost."""
        summary = ImportSummary()
        entries = list(ingest.iter_files([Path(p).expanduser() for p in paths]))
        for i, (path, err) in enumerate(entries):
            if cancel is not None and cancel.is_set():
                summary.cancelled = True
                break
            if progress:
                progress(i, len(entries), str(path))
            outcome = self._import_one(path, err)
            if outcome == "imported":
                summary.imported += 1
            elif outcome == "unchanged":
                summary.unchanged += 1
            elif outcome == "duplicate":
                summary.duplicates += 1
            else:
                summary.failed.append({"path": str(path), "error": outcome})
        if progress:
            progress(len(entries), len(entries), "")
        return summary

    def _import_one(self, path: Path, err: Exception | None) -> str:
        key = str(path.absolute())
        existing = self.store.document_by_path(key)
        if err is not None:
            return self._fail(key, existing, str(err))
        try:
            st = path.stat()
            if existing and existing.status in ("ok", "duplicate") and existing.mtime == st.st_mtime \
                    and existing.size == st.st_size:
                return "unchanged"
            if st.st_size > ingest.MAX_FILE_BYTES:
                raise ingest.IngestError(f"file is {st.st_size / 2**20:.0f} MB; the limit is "
                                         f"{ingest.MAX_FILE_BYTES // 2**20} MB per file")
            sha = file_sha256(path)
        except OSError as exc:
            return self._fail(key, existing, f"cannot read file: {exc.strerror or exc}")
        except ingest.IngestError as exc:
            return self._fail(key, existing, str(exc))
        if existing and existing.sha256 == sha and existing.status in ("ok", "duplicate"):
            self.store.write(lambda c: c.execute(   # (a file restored after a failed change: clear that error)
                "UPDATE documents SET mtime=?, size=?, error=CASE WHEN status='ok' THEN NULL ELSE error END "
                "WHERE id=?", (st.st_mtime, st.st_size, existing.id)))
            return "unchanged"
        twin = self.store.find_by_sha(sha, key)
        if twin is not None:
            self.store.put_document(path=key, sha256=sha, mtime=st.st_mtime, size=st.st_size, title=twin.title,
                                    status="duplicate", error=f"same content as {twin.path}", duplicate_of=twin.id)
            return "duplicate"
        try:
            doc = self.extractor.extract(path)
            chunks = chunk_document(doc.title, doc.text)
            if not chunks:
                raise ingest.IngestError("no text found")
            total = self.store.profile_stats()["chunks"]
            if total + len(chunks) > MAX_PROFILE_CHUNKS:
                raise ingest.IngestError(f"the profile is full ({total} chunks; limit {MAX_PROFILE_CHUNKS}); "
                                         "forget some documents first")
        except ingest.IngestError as exc:
            return self._fail(key, existing, str(exc), sha=sha, st=st)
        except (RecursionError, MemoryError, UnicodeError, ValueError, OSError) as exc:
            return self._fail(key, existing, f"could not read file: {type(exc).__name__}: {exc}", sha=sha, st=st)
        self.store.put_document(path=key, sha256=sha, mtime=st.st_mtime, size=st.st_size, title=doc.title,
                                status="ok", chunks=chunks)
        return "imported"

    def _fail(self, key: str, existing, error: str, sha=None, st=None) -> str:
        """Record a failure; a document that was good before keeps its stored text."""
        if existing is None or existing.status == "failed":
            self.store.put_document(path=key, sha256=sha, mtime=st.st_mtime if st else None,
                                    size=st.st_size if st else None, title=None, status="failed", error=error)
        elif existing.status == "ok":     # shown by `tailor docs`; cleared by the next good import
            self.store.write(lambda c: c.execute("UPDATE documents SET error=? WHERE id=?",
                                                 (f"kept the previous import; the file now fails: {error}",
                                                  existing.id)))
        return error

    def docs(self) -> list[dict]:
        return [d.as_dict() for d in self.store.documents()]

    def forget(self, ident: str) -> dict:
        """Remove a document (by id or path), its chunks, embeddings and index entries, and every
        adapter derived from it; then regenerate the adapter from what remains."""
        doc = None
        if str(ident).isdigit():
            doc = self.store.document(int(ident))
        if doc is None:
            doc = self.store.document_by_path(str(Path(ident).expanduser().absolute()))
        if doc is None:
            raise TailorError(f"no document {ident!r}; `tailor docs` lists them")
        tainted = self.store.adapters_using(doc.id)
        self.store.delete_document(doc.id)
        # duplicates of it keep nothing of their own; drop them too so no trace of the content remains
        dups = [d for d in self.store.documents()
                if d.duplicate_of == doc.id or (d.status == "duplicate" and d.sha256 == doc.sha256)]
        for d in dups:
            self.store.delete_document(d.id)
        self.store.scrub_sources({doc.path} | {d.path for d in dups})
        for a in tainted:
            self._delete_adapter(a)
        self._sweep_adapter_dir(min_age_s=0)     # adapters a crash left unregistered may derive from it too
        if self._engine is not None and tainted and self._engine.adapter_path and \
                str(self._engine.adapter_path) in {a["path"] for a in tainted}:
            self._engine.set_adapter(None)
        self.store.vacuum()
        result = {"forgotten": doc.path, "adapters_deleted": [a["version"] for a in tainted]}
        if self.store.profile_stats()["documents"]:
            result["adapter"] = self.adapt()
        return result

    # --- adapter -----------------------------------------------------------------
    def embed_pending(self, progress: Callable[[int, int, str], None] | None = None) -> int:
        emb_id = self._embedder_id()
        if not self._other_embeddings_dropped:      # after an embedder upgrade, re-embed rather than mix; not on
            self.store.drop_other_embeddings(emb_id)  # every adapt/retrieve: it scans the whole table
            self._other_embeddings_dropped = True
        return embed_chunks(self.store, self.embedder, emb_id, progress)

    def _embedder_id(self) -> str:
        from .models import EMBEDDER_KEY
        return EMBEDDER_KEY

    def latest_adapter(self) -> dict | None:
        for a in self.store.adapters():
            if Path(a["path"]).is_file():
                return a
        return None

    def adapt(self, load: bool | None = None, progress=None) -> dict:
        """Profile -> adapter -> live model. A failure at any step keeps the last good adapter."""
        t0 = time.perf_counter()
        ms = {}
        self.embed_pending(progress)
        ms["embed"] = (time.perf_counter() - t0) * 1000
        stats = self.store.profile_stats()
        if stats["documents"] == 0:
            raise TailorError("the profile is empty: import some of your documents first (`tailor import PATH`)")
        t = time.perf_counter()
        hyper = self.hypernet
        vec = profile_vector((v for _, v in self.store.iter_embeddings(self._embedder_id())), hyper.pooling)
        fingerprint = self.store.profile_fingerprint(self._embedder_id())
        adapter = hyper.generate(vec)
        ms["hypernet"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        path = self.adapter_dir / f"adapter-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.gguf"
        adapter.metadata.update({"profile_fingerprint": fingerprint, "created": now_iso(),
                                 "base_model": self.model_path.name})
        write_adapter(adapter, path, self.spec)
        ms["write"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        try:
            if load or (load is None and self._engine is not None):
                self.engine.set_adapter(path, self.settings.scale if self.settings.use_adapter else 0.0)
            else:
                from .lora_gguf import read_adapter
                read_adapter(path, self.spec)      # validate now even when no model is loaded
        except Exception:
            path.unlink(missing_ok=True)
            raise
        ms["load"] = (time.perf_counter() - t) * 1000
        ms["total"] = (time.perf_counter() - t0) * 1000
        version = self.store.add_adapter(path=str(path), profile_fingerprint=fingerprint, hypernet_id=hyper.id,
                                         n_documents=stats["documents"], n_chunks=stats["chunks"], timings=ms,
                                         document_ids=self.store.ok_document_ids())
        for old in self.store.adapters()[KEEP_ADAPTERS:]:
            self._delete_adapter(old)
        return {"version": version, "path": str(path), "ms": {k: round(v, 2) for k, v in ms.items()}}

    def _delete_adapter(self, a: dict) -> None:
        self.store.delete_adapter(a["version"])
        Path(a["path"]).unlink(missing_ok=True)

    # --- retrieval ---------------------------------------------------------------
    def retrieve(self, query: str, k: int) -> list[dict]:
        """The person's k passages best for ``query`` (retrieval.py: hybrid BM25 + cosine, the evaluation's too)."""
        if k <= 0 or self.store.profile_stats()["chunks"] == 0:
            return []
        self.embed_pending()
        return retrieval.passages(self.store, self._embedder_id(), self.embedder.embed, query, k)

    # --- export -------------------------------------------------------------------
    def export(self, dest: Path, scale: float | None = None) -> dict:
        """The current adapter for use outside Tailor: a GGUF LoRA that llama.cpp (``--lora``), llama-cpp-python
        (``Llama(lora_path=...)``) and Ollama (``ADAPTER``) load, with the chosen strength folded into its alpha
        (Ollama has no strength setting), and an Ollama Modelfile naming the base model it was made for."""
        latest = self.latest_adapter()
        if latest is None:
            raise TailorError("no adapter yet: import documents first (tailor import), then tailor adapt")
        scale = self.settings.scale if scale is None else scale
        if not 0 < scale <= 4:
            raise TailorError(f"strength {scale} is outside (0, 4]")
        dest = Path(dest).expanduser().absolute()
        dest.mkdir(parents=True, exist_ok=True)
        ad = read_adapter(Path(latest["path"]), self.spec)
        adapter = dest / f"tailor-adapter-v{latest['version']}.gguf"
        write_adapter(LoraAdapter(ad.weights, ad.alpha * scale, {**ad.metadata, "exported_scale": str(scale)}),
                      adapter, self.spec)
        base = self.model_path
        lines = ["# Tailor's personalized model for Ollama:  ollama create tailor -f Modelfile && ollama run tailor",
                 f"FROM {base}", f"ADAPTER ./{adapter.name}"]
        template = self.engine.template if self._engine is not None else ""
        if "<|im_start|>" in (template or "") or base.name == DEFAULT_BASE.filename:     # ChatML, as the bundled model
            lines += ['TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
                      '{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n'
                      '{{ .Response }}<|im_end|>\n"""', 'PARAMETER stop "<|im_end|>"']
        s = CHAT_SAMPLING
        lines += [f"PARAMETER temperature {s.temperature}", f"PARAMETER repeat_penalty {s.repeat_penalty}",
                  f"PARAMETER min_p {s.min_p}"]
        modelfile = dest / "Modelfile"
        modelfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return {"adapter": str(adapter), "version": latest["version"], "scale": scale, "base_model": str(base),
                "modelfile": str(modelfile),
                "llama_cpp": f"llama-cli -m {base} --lora {adapter}",
                "python": f"Llama(model_path={str(base)!r}, lora_path={str(adapter)!r})"}

    # --- answers -----------------------------------------------------------------
    def _prepare(self, messages: list[dict], use_adapter: bool | None, scale: float | None, rag: bool | None,
                 k: int | None, max_tokens: int = 256) -> tuple[str, list[dict], int | None]:
        """The prompt for the last message of a chat: adapter set, retrieval added, and the history trimmed
        (prompts.trim_history) so the prompt leaves ``max_tokens`` of the context for the answer."""
        use_adapter = self.settings.use_adapter if use_adapter is None else use_adapter
        scale = self.settings.scale if scale is None else scale
        rag = self.settings.rag if rag is None else rag
        eng = self.engine
        latest = self.latest_adapter()
        active = None
        if use_adapter and latest is not None:
            if eng.adapter_path is None or str(eng.adapter_path) != latest["path"]:
                eng.set_adapter(Path(latest["path"]), scale)
            eng.set_scale(scale)
            active = latest["version"] if scale != 0 else None
        else:
            eng.set_scale(0.0)
        k = k or self.settings.rag_k
        task = parse_task(messages[-1]["content"]) if rag else None
        if task:
            items, sources = self._examples(task, k)
            build = lambda turns: eng.chat_prompt(with_examples(task[0], turns, items))    # noqa: E731
        else:
            sources = self.retrieve(messages[-1]["content"], k) if rag else []
            build = lambda turns: eng.chat_prompt(with_context(turns, [s["text"] for s in sources]))  # noqa: E731
        room = eng.n_ctx - max_tokens
        turns = trim_history(messages, lambda t: len(eng.tokenize(build(t))) <= room)
        return build(turns), sources, active

    def _examples(self, task: tuple[str, str, str], k: int) -> tuple[list[dict], list[dict]]:
        name, title, text = task
        if self.store.profile_stats()["chunks"] == 0:
            return [], []
        self.embed_pending()
        return retrieval.examples(self.store, self._embedder_id(), self.embedder.embed, name,
                                  text if name == "headline" else title, k)

    def sampling(self, seed: int | None = None, greedy: bool | None = None) -> Sampling:
        """The one decoding rule of chat and ask: CHAT_SAMPLING (chosen by measurement), greedy on request."""
        if self.settings.greedy if greedy is None else greedy:
            return GREEDY
        return replace(CHAT_SAMPLING, seed=self.settings.seed if seed is None else seed)

    def stream(self, messages: list[dict], *, use_adapter=None, scale=None, rag=None, k=None, max_tokens=256,
               seed=None, greedy=None, sampling: Sampling | None = None
               ) -> tuple[Iterator[str], list[dict], int | None]:
        prompt, sources, active = self._prepare(messages, use_adapter, scale, rag, k, max_tokens)
        sampling = sampling or self.sampling(seed, greedy)
        return self.engine.stream(prompt, max_tokens=max_tokens, sampling=sampling), sources, active

    def ask(self, prompt: str, *, use_adapter=None, scale=None, rag=None, k=None, max_tokens=256, seed=None,
            greedy=None, sampling: Sampling | None = None, history: list[dict] | None = None) -> Answer:
        messages = (history or []) + [{"role": "user", "content": prompt}]
        full_prompt, sources, active = self._prepare(messages, use_adapter, scale, rag, k, max_tokens)
        g = self.engine.complete(full_prompt, max_tokens=max_tokens, sampling=sampling or self.sampling(seed, greedy))
        return Answer(g.text, active, sources, round(g.first_token_ms, 1), round(g.tokens_per_s, 1))

    # --- chats -------------------------------------------------------------------
    # The CLI and the UI keep chats through these, never through the store: one place records a turn.
    def new_chat(self, title: str) -> int:
        return self.store.new_chat(title)

    def chats(self) -> list[dict]:
        return self.store.chats()

    def chat_messages(self, chat_id: int) -> list[dict]:
        return self.store.messages(chat_id)

    def delete_chat(self, chat_id: int) -> list[dict]:
        self.store.delete_chat(chat_id)
        return self.store.chats()

    def record_message(self, chat_id: int, role: str, content: str, adapter_version: int | None = None,
                       sources: list[dict] | None = None) -> int:
        """Persist one message. An answer is stored even when empty (stopped before its first token), so the
        turns of a chat alternate."""
        return self.store.add_message(chat_id, role, content, adapter_version, sources)

    def drop_last_answer(self, chat_id: int) -> None:
        """Remove a chat's last message if it is an answer (before it is regenerated)."""
        self.store.delete_last_answer(chat_id)

    def profile_stats(self) -> dict:
        return self.store.profile_stats()

    # --- info / wipe ---------------------------------------------------------------
    def info(self) -> dict:
        out = {"data_dir": str(self.home), "database": str(self.store.path), "schema": self.store.schema_version(),
               "profile": self.store.profile_stats(), "settings": asdict(self.settings)}
        try:
            out["base_model"] = {"path": str(self.model_path), "fingerprint": self.spec.fingerprint(),
                                 "architecture": self.spec.architecture, "layers": self.spec.n_layer}
        except Exception as exc:
            out["base_model"] = {"error": str(exc)}
        try:
            out["hypernet"] = self.hypernet.info()
        except Exception as exc:
            out["hypernet"] = {"error": str(exc)}
        out["embedder"] = self._embedder_id()
        out["adapters"] = [{k: a[k] for k in ("version", "path", "n_documents", "n_chunks", "timings", "created_at")}
                           for a in self.store.adapters()]
        return out

    def wipe(self) -> None:
        """Delete everything Tailor stored for this profile: database, adapters, chats, settings, log. The
        default profile lives in the data dir itself; the other profiles under it (``profiles/``) stay."""
        if self._engine is not None:
            self._engine.set_adapter(None)
        if self._extractor is not None:
            self._extractor.close()
        self.store.close()
        close_logging()
        for entry in self.home.iterdir() if self.home.is_dir() else []:
            if entry.name == PROFILES_DIR and entry.is_dir():
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        left = [e.name for e in self.home.iterdir()] if self.home.is_dir() else []
        if left and left != [PROFILES_DIR]:
            raise TailorError(f"could not delete everything in {self.home}; delete what is left by hand")
        if not left and self.home.parent.name != PROFILES_DIR:     # a named profile stays, empty
            self.home.rmdir()

    def with_profile(self, home: Path) -> "Tailor":
        """A core on another profile's data dir that shares this one's loaded models (base model, embedder,
        hypernetwork): switching profiles reloads nothing; the next answer swaps in that profile's adapter."""
        other = Tailor(home, None)
        with self._lock:
            other._embedder, other._hypernet, other._engine, other._spec = \
                self._embedder, self._hypernet, self._engine, self._spec
        return other

