"""`tailor serve`: the personalized model behind an OpenAI-compatible HTTP API on this machine.

So Open WebUI, an editor plugin, a script with the `openai` package, or any
OpenAI client uses the model that writes like the person. The answers go
through the same core path as the app (``Tailor.stream``: the latest adapter,
hot-swapped when it is regenerated, the one history-trimming rule, the chat
sampling defaults).

What it guarantees:
- loopback only unless another host is named, and then only with a token;
  with ``--token`` every request needs ``Authorization: Bearer <token>``;
- one loaded model answers one request at a time; at most ``queue`` requests
  wait for it, the next gets 429 at once (never a hung connection); a request
  body over 1 MB gets 413, ``max_tokens`` over the cap 400;
- streaming answers are Server-Sent Events of `chat.completion.chunk`s, one
  request's pieces only (requests never interleave on the model).
Standard library only (``http.server``): nothing to install, nothing that
phones home.
"""
from __future__ import annotations

import ipaddress
import json
import secrets
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .engine import PromptTooLongError, Sampling
from .log import log
from .prompts import ANSWER_TOKENS

MODEL_ID = "tailor"
MAX_BODY = 1 << 20
MAX_TOKENS_CAP = 1024
ROLES = ("system", "user", "assistant")


class ServeError(ValueError):
    """A request the server answers with an HTTP error (status, message)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_request(body: bytes) -> dict:
    """The chat request, checked field by field (anything else in it is ignored, as OpenAI's API allows)."""
    try:
        req = json.loads(body)
    except ValueError as e:
        raise ServeError(400, f"the body is not JSON ({e})") from e
    if not isinstance(req, dict):
        raise ServeError(400, "the body must be a JSON object")
    msgs = req.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ServeError(400, "'messages' must be a non-empty list")
    clean = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ServeError(400, f"messages[{i}]: 'role' must be one of {', '.join(ROLES)}")
        content = m.get("content")
        if isinstance(content, list):       # the newer content-parts form: its text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise ServeError(400, f"messages[{i}]: 'content' must be text")
        clean.append({"role": m["role"], "content": content})
    if clean[-1]["role"] != "user":
        raise ServeError(400, "the last message must be the user's")
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens", ANSWER_TOKENS))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS_CAP:
        raise ServeError(400, f"'max_tokens' must be an integer from 1 to {MAX_TOKENS_CAP}")
    out = {"messages": clean, "max_tokens": max_tokens, "stream": bool(req.get("stream", False))}
    for key, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("presence_penalty", -2.0, 2.0),
                        ("frequency_penalty", -2.0, 2.0)):
        v = req.get(key)
        if v is not None:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
                raise ServeError(400, f"'{key}' must be a number from {lo} to {hi}")
            out[key] = float(v)
    seed = req.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ServeError(400, "'seed' must be an integer")
    out["seed"] = seed
    return out


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tailor, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 queue: int = 8):
        if not is_loopback(host) and not token:
            raise ServeError(400, f"serving on {host} (not this machine only) needs a token (--token)")
        self.tailor, self.token = tailor, token
        self.slots = threading.BoundedSemaphore(queue + 1)     # the one answering + those waiting
        self.model = threading.Lock()                          # one answer at a time on the one model
        super().__init__((host, port), Handler)

    def sampling(self, req: dict) -> Sampling:
        s = self.tailor.sampling(seed=req["seed"])
        changes = {k: req[k] for k in ("temperature", "top_p", "presence_penalty", "frequency_penalty") if k in req}
        return replace(s, **changes)


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):          # requests go to tailor.log, never their content
        log.info("serve: " + fmt, *args)

    # --- plumbing ---------------------------------------------------------------------
    def _json(self, status: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, e: ServeError) -> None:
        self._json(e.status, {"error": {"message": str(e), "type": e.kind, "code": e.status}})

    def _authorized(self) -> bool:
        if not self.server.token:
            return True
        got = self.headers.get("Authorization", "")
        return secrets.compare_digest(got.encode(), f"Bearer {self.server.token}".encode())

    # --- routes -------------------------------------------------------------------------
    def do_GET(self):
        if not self._authorized():
            return self._error(ServeError(401, "missing or wrong bearer token", "authentication_error"))
        if self.path.rstrip("/") == "/v1/models":
            return self._json(200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "tailor (this machine)"}]})
        self._error(ServeError(404, f"no route {self.path}", "not_found"))

    def do_POST(self):
        try:
            if not self._authorized():
                raise ServeError(401, "missing or wrong bearer token", "authentication_error")
            if self.path.rstrip("/") != "/v1/chat/completions":
                raise ServeError(404, f"no route {self.path}", "not_found")
            try:
                n = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise ServeError(411, "Content-Length is required") from None
            if n > MAX_BODY:
                raise ServeError(413, f"the request is {n} bytes; the limit is {MAX_BODY}")
            req = parse_request(self.rfile.read(n))
        except ServeError as e:
            self.close_connection = True
            return self._error(e)
        if not self.server.slots.acquire(blocking=False):
            return self._error(ServeError(429, "the model is busy and the queue is full; retry shortly",
                                          "rate_limit_error"))
        try:
            with self.server.model:
                self._answer(req)
        finally:
            self.server.slots.release()

    def _answer(self, req: dict) -> None:
        t = self.server.tailor
        cid, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
        try:
            usage: dict = {}
            pieces, _sources, active, _strength, _words = t.stream(req["messages"], max_tokens=req["max_tokens"],
                                                                   rag=False, sampling=self.server.sampling(req),
                                                                   usage=usage)
        except PromptTooLongError as e:
            return self._error(ServeError(400, str(e), "context_length_exceeded"))
        try:
            self._send(req, pieces, active, cid, created, usage)
        finally:
            pieces.close()             # a generator left suspended would keep holding the engine's lock

    def _send(self, req: dict, pieces, active, cid: str, created: int, usage: dict) -> None:
        model = f"{MODEL_ID}-v{active}" if active else f"{MODEL_ID}-base"
        if not req["stream"]:
            text = "".join(pieces).strip()
            return self._json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": _finish(usage, req)}],
                "usage": {"prompt_tokens": usage.get("prompt_tokens", 0),
                          "completion_tokens": usage.get("completion_tokens", 0),
                          "total_tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(delta: dict, finish=None) -> None:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        try:
            event({"role": "assistant", "content": ""})
            for piece in pieces:
                event({"content": piece})
            event({}, _finish(usage, req))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            t.engine.stop()            # the client went away: stop generating for nobody
            log.info("serve: client left mid-answer")


def serve(tailor, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, queue: int = 8,
          ready=None) -> None:
    srv = Server(tailor, host, port, token, queue)
    if ready:
        ready(srv)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()


def _finish(usage: dict, req: dict) -> str:
    """OpenAI's finish_reason: "length" when the answer was cut at max_tokens, so a client can ask for more."""
    return "length" if usage.get("completion_tokens", 0) >= req["max_tokens"] else "stop"
