"""The calls the UI makes into the core, as plain functions run on the worker thread.

Kept free of Qt so each is a small, readable unit: a job takes the ``Tailor``
and a ``report`` callback and returns plain data (dicts, lists) that the UI
thread may read without touching the core.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import asdict
from pathlib import Path

from ..paths import assets_dir
from .worker import NewCore

WATCH_DIR_LIMIT = 256       # sub-folders watched per imported folder (QFileSystemWatcher is not recursive)


def snapshot(t, _report=None) -> dict:
    """Everything the window shows about the profile, in one round trip."""
    return {"home": str(t.home), "docs": t.docs(), "stats": t.profile_stats(), "adapter": t.latest_adapter(),
            "adapter_stale": t.adapter_stale(), "settings": asdict(t.settings), "chats": t.chats()}


def switch_profile(root: str, name: str, create: bool = False):
    """Continue on another profile's core; the loaded models are shared, so nothing reloads (core.with_profile).
    The choice is remembered: the app reopens on it."""
    def job(t, _report):
        from ..paths import profile_home, profile_names, remember_profile
        new = t.with_profile(profile_home(name, create=create, root=Path(root)))
        remember_profile(Path(root), name)
        return NewCore(new, snapshot(new) | {"profile": name, "profiles": profile_names(Path(root))})
    return job


def profiles(root: str):
    """The profiles there are, and the one the app was last on (paths.last_profile)."""
    def job(_t, _report):
        from ..paths import last_profile, profile_names
        return {"names": profile_names(Path(root)), "last": last_profile(Path(root))}
    return job


def import_paths(paths: list[str], cancel: threading.Event):
    """Import, reporting (done, total, path) per file; the snapshot comes back with the summary."""
    def job(t, report):
        t0 = time.perf_counter()
        summary = t.import_paths([Path(p) for p in paths], progress=lambda i, n, p: report((i, n, p)),
                                 cancel=cancel)
        out = summary.as_dict() | {"ms": round((time.perf_counter() - t0) * 1000, 1)}
        bundled = assets_dir().absolute()
        folders = [str(Path(p).expanduser().absolute()) for p in paths
                   if Path(p).is_dir() and not Path(p).expanduser().absolute().is_relative_to(bundled)]
        if folders:
            watched = list(dict.fromkeys(t.settings.watched + folders))
            if watched != t.settings.watched:
                t.settings.watched = watched
                t.save_settings()
        return out | {"snapshot": snapshot(t)}
    return job


def rescan_watched(t, report):
    """Re-import the watched folders; unchanged files are skipped by the core (size/mtime, then hash)."""
    folders = [p for p in t.settings.watched if Path(p).is_dir()]
    summary = t.import_paths([Path(p) for p in folders]) if folders else None
    return {"summary": summary.as_dict() if summary else None, "snapshot": snapshot(t)}


def watch_dirs(t, _report) -> list[str]:
    """The folders (and their sub-folders, up to a limit) a file watcher should follow."""
    out: list[str] = []
    for root in t.settings.watched:
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            out.append(dirpath)
            if len(out) >= WATCH_DIR_LIMIT:
                return out
    return out


def adapt(t, report) -> dict:
    """Regenerate the adapter and load it into the live model (the model loads on the first adapt)."""
    result = t.adapt(load=True, progress=lambda i, n, what: report((i, n, what)))
    return {"adapter": result.as_dict(), "snapshot": snapshot(t)}


def build_contexts(t, report) -> dict:
    """The keys of documents imported since the last build (app.knn), so no answer waits for them; cached per
    document, so this is quick when nothing is new."""
    ctx = t.contexts(compute=True, progress=lambda i, n, what: report((i, n, what)))
    return {"keys": 0 if ctx is None else len(ctx)}


def forget(ids: list[int]):
    """Forget documents. The core regenerates the adapter from what remains after each one."""
    def job(t, report):
        results = []
        for n, ident in enumerate(ids):
            report((n, len(ids), str(ident)))
            results.append(t.forget(str(ident)).as_dict())
        adapted = [r["adapter"] for r in results if "adapter" in r]
        return {"forgotten": results, "adapter": adapted[-1] if adapted else None, "snapshot": snapshot(t)}
    return job


def unwatch(t, _report) -> dict:
    t.settings.watched = []
    t.save_settings()
    return snapshot(t)


def update_settings(values: dict):
    """Apply and persist settings; values the running model was built with take effect on restart."""
    def job(t, _report):
        for k, v in values.items():
            if k in t.settings.__dataclass_fields__:
                setattr(t.settings, k, v)
        t.save_settings()
        return asdict(t.settings)
    return job


def warm_up(t, _report) -> None:
    """Load the base model ahead of the first answer, so the first reply starts at once."""
    t.engine


def load_chat(chat_id: int):
    return lambda t, _r: t.chat_messages(chat_id)


def delete_chat(chat_id: int):
    return lambda t, _r: t.delete_chat(chat_id)


def _short_sources(sources: list[dict]) -> list[dict]:
    return [{"path": s["path"], "score": s.get("score"), "text": s["text"][:400]} for s in sources]


def _run_stream(t, runner, messages, opts, stop: threading.Event, report, side: str | None = None) -> dict:
    t0 = time.perf_counter()
    pieces, sources, active, strength, words = t.stream(messages, **opts)
    runner.engine = t.engine
    report({"kind": "start", "side": side, "sources": _short_sources(sources), "adapter_version": active,
            "strength": strength, "words": words})
    parts, first = [], None
    try:
        for piece in pieces:
            if stop.is_set():
                break
            if first is None:
                first = time.perf_counter()
            parts.append(piece)
            report({"kind": "piece", "side": side, "text": piece})
    finally:
        pieces.close()
    end = time.perf_counter()
    n = len(parts)
    return {"text": "".join(parts).strip(), "sources": _short_sources(sources), "adapter_version": active,
            "strength": strength, "words": words, "stopped": stop.is_set(), "tokens": n,
            "first_token_ms": round(((first or end) - t0) * 1000, 1),
            "tokens_per_s": round((n - 1) / (end - first), 1) if first and n > 1 and end > first else 0.0}


def answer(runner, *, chat_id: int | None, title: str, history: list[dict], prompt: str | None, opts: dict,
           stop: threading.Event):
    """Stream one answer and persist the turn. ``prompt`` None regenerates the last answer to ``history``."""
    def job(t, report):
        cid = chat_id if chat_id is not None else t.new_chat(title)
        if prompt is not None:
            t.record_message(cid, "user", prompt)
        msgs = history + ([{"role": "user", "content": prompt}] if prompt is not None else [])
        out = _run_stream(t, runner, msgs, opts, stop, report)     # the core trims the history to fit
        t.record_message(cid, "assistant", out["text"], out["adapter_version"], out["sources"])
        return out | {"chat_id": cid, "chats": t.chats()}
    return job


def drop_last_answer(chat_id: int):
    """Remove a chat's last assistant message before it is regenerated."""
    return lambda t, _r: t.drop_last_answer(chat_id)


def compare(runner, prompt: str, opts: dict, scale: float, stop: threading.Event):
    """Answer one prompt with the base model, then with the adapter, one after the other on the one context;
    both sides sample with one seed, so what differs between them is the adapter, not the dice."""
    def job(t, report):
        msgs = [{"role": "user", "content": prompt}]
        o = opts if opts.get("seed") is not None else opts | {"seed": secrets.randbits(31)}
        base = _run_stream(t, runner, msgs, o | {"use_adapter": False}, stop, report, side="base")
        if stop.is_set():
            return {"base": base, "personal": None}
        personal = _run_stream(t, runner, msgs, o | {"use_adapter": True, "scale": scale}, stop, report,
                               side="personal")
        return {"base": base, "personal": personal}
    return job
