"""The headless core: ingest -> store -> embed -> hypernet -> adapter -> engine.

The CLI and the Qt app are thin layers over ``Tailor``. Models load lazily
(the embedder on the first import or retrieval, the base model on the first
answer), each exactly once per process.
"""
from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import adapters, importer, offline, retrieval
from .adapters import KEEP_ADAPTERS, AdaptResult, ForgetResult  # noqa: F401 (the façade's types)
from .base_model import BaseSpec, read_base_spec
from .embed import embed_chunks
from .engine import GREEDY, Sampling
from .importer import MAX_PROFILE_CHUNKS, ImportSummary  # noqa: F401 (the façade's types)
from .log import close_logging, log, setup_logging
from .lora_gguf import AdapterError, now_iso, read_adapter, write_adapter
from .models import verify_base_model
from .paths import PROFILES_DIR, data_dir, ensure_private_dir
from .profile import profile_vector
from .prompts import ANSWER_TOKENS, parse_task, request_strength, trim_history, with_context, with_examples
from .sandbox import Extractor
from .settings import Settings
from .store import Store

# Chat and ask decode with these unless greedy is asked for. Greedy decoding made the personalized answers loop
# (issue 13); chosen by `tailor quality` on assets/prompts/chat-quality.jsonl (README "Readable answers").
CHAT_SAMPLING = Sampling(temperature=0.7, repeat_penalty=1.1)


class TailorError(RuntimeError):
    """An expected failure with a message for the person (no traceback)."""


@dataclass
class Answer:
    text: str
    adapter_version: int | None
    sources: list[dict]
    strength: float | None = None      # the adapter's strength this answer had (prompts.request_strength)
    first_token_ms: float = 0.0
    tokens_per_s: float = 0.0
    words: bool = False                # the person's words (app.words) raised in this answer

    def as_dict(self) -> dict:
        return asdict(self)


def adapter_badge(version: int | None, strength: float | None = None, words: bool = False) -> str:
    """What made an answer, in the words the app shows under it and the terminal prints after it: a person
    should see that a chat question got a quarter of the strength (prompts.request_strength) wherever they ask,
    and whether their words were raised (app.words)."""
    if version is None:
        return "base model"
    return (f"personalized · adapter v{version}" + (f" · strength {strength:.2f}" if strength is not None else "")
            + (" · your words" if words else ""))


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
        self._words: tuple[str, object] | None = None   # (profile fingerprint, app.words.Words or None)
        self._contexts: tuple | None = None   # (profile fingerprint, app.knn.Contexts or None, all keys in it)
        self._other_embeddings_dropped = False    # once per process: an embedder upgrade means a restart
        self._lock = threading.RLock()    # model objects are built once, whichever thread asks first
        self._extractor: Extractor | None = None
        offline.force_offline()
        adapters.sweep(self.store, self.adapter_dir)

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

    def words(self):
        """The person's words (app.words.Words) from the documents as they are now, counted once per set of
        documents; None with an empty profile or a hypernetwork without its words head beside it."""
        with self._lock:
            fingerprint = self.store.profile_fingerprint("words")
            if self._words is None or self._words[0] != fingerprint:
                from .words import WordsHead, of_store
                head = WordsHead.beside(self.hypernet)
                eng = self.engine
                words = of_store(head, self.store, lambda t: eng.tokenize(t, special=False)) if head else None
                self._words = (fingerprint, words)
            return self._words[1]

    def contexts(self, compute: bool = False, progress=None):
        """The person's contexts (app.knn.Contexts) from their titled documents as they are now; None with no
        titled document or a hypernetwork without its knn.json beside it. A document's keys are computed once
        under the base model and cached by content (home/cache/knn): ``compute`` computes those missing (the app
        does so in the background after an import, the CLI after `import`); without it an answer takes the keys
        there are and never waits for a pass over the documents."""
        with self._lock:
            fingerprint = self.store.profile_fingerprint("knn")
            have = self._contexts
            if have is not None and have[0] == fingerprint and (have[2] or not compute):
                return have[1]
            from .knn import KnnConfig, of_documents
            cfg = KnnConfig.beside(self.hypernet)
            if cfg is None:
                self._contexts = (fingerprint, None, True)
                return None
            eng = self.engine
            with eng.detached() if compute else nullcontext():     # keys computed are the base model's
                cache = self.home / "cache" / "knn" / self.model_path.name
                for folder in (cache.parent.parent, cache.parent, cache):
                    ensure_private_dir(folder)
                contexts, complete = of_documents(cfg, self._titled_documents(), eng, self.model_path.name, cache,
                                                  compute, progress)
            self._contexts = (fingerprint, contexts, complete)
            return contexts

    def _titled_documents(self) -> list[dict]:
        """The person's titled documents as their contexts pose them (without the title's heading)."""
        from .retrieval import EXAMPLE_CHUNKS, without_heading
        return [d | {"text": without_heading(d["text"], d["title"])} for d in self.store.titled_documents(EXAMPLE_CHUNKS)]

    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None

    # --- import ------------------------------------------------------------------
    def import_paths(self, paths: Iterable[Path], progress: Callable[[int, int, str], None] | None = None,
                     cancel: threading.Event | None = None) -> ImportSummary:
        """Import files and folders; one bad file fails alone and nothing stored is lost (importer.py)."""
        return importer.import_paths(self.store, self.extractor, paths, progress, cancel)

    def docs(self) -> list[dict]:
        return [d.as_dict() for d in self.store.documents()]

    def forget(self, ident: str) -> ForgetResult:
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
            adapters.delete(self.store, a)
        adapters.sweep(self.store, self.adapter_dir, min_age_s=0)   # a crash's unregistered ones may derive from it
        if self._engine is not None and tainted and self._engine.adapter_path and \
                str(self._engine.adapter_path) in {a["path"] for a in tainted}:
            self._engine.set_adapter(None)
        self.store.vacuum()
        with self._lock:                   # its contexts (app.knn): the cached keys hold its tokens
            from .knn import prune
            self._contexts = None
            prune(self.home / "cache" / "knn", self._titled_documents())
        return ForgetResult(doc.path, [a["version"] for a in tainted], self.adapt() if self.adapter_stale() else None)

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

    def adapter_stale(self) -> bool:
        """The one rule for when the adapter is regenerated (after an import in the CLI and the app, a rescan of
        watched folders, a forget): the profile has documents and the newest adapter was not made from exactly
        them (another set of documents, or none yet)."""
        if not self.store.profile_stats()["documents"]:
            return False
        latest = self.latest_adapter()
        return latest is None or latest["profile_fingerprint"] != self.store.profile_fingerprint(self._embedder_id())

    def adapt(self, load: bool | None = None, progress=None) -> AdaptResult:
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
        path = adapters.new_adapter_path(self.adapter_dir)
        adapter.metadata.update({"profile_fingerprint": fingerprint, "created": now_iso(),
                                 "base_model": self.model_path.name})
        write_adapter(adapter, path, self.spec)
        ms["write"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        try:
            if load or (load is None and self._engine is not None):
                self.engine.set_adapter(path, self.settings.scale if self.settings.use_adapter else 0.0)
            else:
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
            adapters.delete(self.store, old)
        return AdaptResult(version, str(path), {k: round(v, 2) for k, v in ms.items()})

    # --- retrieval ---------------------------------------------------------------
    def retrieve(self, query: str, k: int) -> list[dict]:
        """The person's k passages best for ``query`` (retrieval.py: hybrid BM25 + cosine, the evaluation's too)."""
        if k <= 0 or self.store.profile_stats()["chunks"] == 0:
            return []
        self.embed_pending()
        return retrieval.passages(self.store, self._embedder_id(), self.embedder.embed, query, k)

    # --- export -------------------------------------------------------------------
    def export(self, dest: Path, scale: float | None = None) -> dict:
        """The current adapter, at the chosen strength, for llama.cpp, llama-cpp-python and Ollama (adapters.py)."""
        latest = self.latest_adapter()
        if latest is None:
            raise TailorError("no adapter yet: import documents first (tailor import), then tailor adapt")
        scale = self.settings.scale if scale is None else scale
        if not 0 < scale <= 4:
            raise TailorError(f"strength {scale} is outside (0, 4]")
        return adapters.export(latest, self.spec, self.model_path, Path(dest).expanduser().absolute(), scale,
                               CHAT_SAMPLING)

    # --- answers -----------------------------------------------------------------
    def _prepare(self, messages: list[dict], use_adapter: bool | None, scale: float | None, rag: bool | None,
                 k: int | None, max_tokens: int = ANSWER_TOKENS, examples: bool | None = None,
                 words: bool | None = None
                 ) -> tuple[str, list[dict], Callable | None, int | None, float | None]:
        """The prompt for the last message of a chat: adapter set, retrieval added, and the history trimmed
        (prompts.trim_history) so the prompt leaves ``max_tokens`` of the context for the answer.
        A task request (prompts.parse_task) gets the person's documents as worked examples when ``examples``
        (on by default: the evaluation's best method on both data sets, MODEL_CARD "Worked examples by
        default") or ``rag`` is on; any other request gets passages only with ``rag``. The adapter's
        strength is ``scale`` for a task request and a share of it for anything else (request_strength).
        With ``words`` (a setting, on by default) and the adapter on, an answer whose prompt holds none of the
        person's documents gets the person's words (app.words) at the adapter's strength: with worked examples
        in the prompt the bias no longer helps (MODEL_CARD "The person's words in the app").
        Returns (prompt, sources, the logits bias or None, adapter version or None, the strength applied or
        None)."""
        use_adapter = self.settings.use_adapter if use_adapter is None else use_adapter
        scale = self.settings.scale if scale is None else scale
        rag = self.settings.rag if rag is None else rag
        examples = self.settings.examples if examples is None else examples
        words = self.settings.words if words is None else words
        eng = self.engine
        latest = self.latest_adapter()
        active, strength = None, None
        if use_adapter and latest is not None:
            strength = request_strength(messages[-1]["content"], scale)
            if eng.adapter_path is None or str(eng.adapter_path) != latest["path"]:
                eng.set_adapter(Path(latest["path"]), strength)
            eng.set_scale(strength)
            active, strength = (latest["version"], strength) if strength != 0 else (None, None)
        else:
            eng.set_scale(0.0)
        k = k or self.settings.rag_k
        task = parse_task(messages[-1]["content"]) if rag or examples else None
        items: list[dict] = []
        if task:
            items, sources = self._examples(task, k)
            build = lambda turns: eng.chat_prompt(with_examples(task[0], turns, items))    # noqa: E731
        else:
            sources = self.retrieve(messages[-1]["content"], k) if rag else []
            build = lambda turns: eng.chat_prompt(with_context(turns, [s["text"] for s in sources]))  # noqa: E731
        room = eng.n_ctx - max_tokens
        turns = trim_history(messages, lambda t: len(eng.tokenize(build(t))) <= room)
        bias = None
        if words and active is not None and not items and not sources:
            person = self.words()
            bias = person.processor(strength) if person is not None else None
            contexts = self.contexts() if bias is not None else None
            bias = contexts.processor(bias) if contexts is not None else bias
        return build(turns), sources, bias, active, strength

    def _examples(self, task: tuple[str, str, str], k: int) -> tuple[list[dict], list[dict]]:
        name, title, text = task
        if self.store.profile_stats()["chunks"] == 0:
            return [], []
        self.embed_pending()
        return retrieval.examples(self.store, self._embedder_id(), self.embedder.embed, name,
                                  retrieval.task_query(name, title, text), k)

    def sampling(self, seed: int | None = None, greedy: bool | None = None) -> Sampling:
        """The one decoding rule of chat and ask: CHAT_SAMPLING (chosen by measurement), greedy on request."""
        if self.settings.greedy if greedy is None else greedy:
            return GREEDY
        return replace(CHAT_SAMPLING, seed=self.settings.seed if seed is None else seed)

    def stream(self, messages: list[dict], *, use_adapter=None, scale=None, rag=None, k=None, max_tokens=ANSWER_TOKENS,
               seed=None, greedy=None, sampling: Sampling | None = None, usage: dict | None = None,
               examples=None, words=None) -> tuple[Iterator[str], list[dict], int | None, float | None, bool]:
        """(answer pieces, sources, adapter version or None, its strength or None, whether the person's words were
        raised) for the last message."""
        prompt, sources, bias, active, strength = self._prepare(messages, use_adapter, scale, rag, k, max_tokens,
                                                                examples, words)
        sampling = sampling or self.sampling(seed, greedy)
        return (self.engine.stream(prompt, max_tokens=max_tokens, sampling=sampling, usage=usage, bias=bias), sources,
                active, strength, bias is not None)

    def ask(self, prompt: str, *, use_adapter=None, scale=None, rag=None, k=None, max_tokens=ANSWER_TOKENS, seed=None,
            greedy=None, sampling: Sampling | None = None, history: list[dict] | None = None,
            examples=None, words=None) -> Answer:
        messages = (history or []) + [{"role": "user", "content": prompt}]
        full_prompt, sources, bias, active, strength = self._prepare(messages, use_adapter, scale, rag, k,
                                                                     max_tokens, examples, words)
        g = self.engine.complete(full_prompt, max_tokens=max_tokens, sampling=sampling or self.sampling(seed, greedy),
                                 bias=bias)
        return Answer(g.text, active, sources, strength, round(g.first_token_ms, 1), round(g.tokens_per_s, 1),
                      bias is not None)

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

