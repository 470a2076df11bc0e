"""Evaluate personalization methods through the real runtime (llama.cpp + GGUF adapters).

    python -m hypernet_onnx.evaluate --data ../shared/data/mlpapers-dev.jsonl.gz --users 30 --out runs/eval-dev

Methods: base, rag, p2p, p2p+rag, p2p-shuffled, mt-lora, oppu (see MODEL_CARD.md), and rag-shuffled,
p2p+rag-shuffled: rag / p2p+rag with the next user's retrieved items (and adapter) instead of the person's own;
mt-lora+rag: the shared LoRA shown the person's own items, the fair control for p2p+rag (what a person runs);
p2p+words (-shuffled): p2p with the person's (the next user's) words, app.words, as the app applies them to a
request without documents in its prompt; p2p+words+knn (-shuffled): and their contexts after the words, app.knn
(keys of their items under the base model, cached per item under the workdir).
Per method and task: ROUGE-1/ROUGE-L of the greedy answer (rouge-score, stemmed),
mean per-token NLL of the gold answer, and seconds per user to personalize.
Paired bootstrap 95% CIs (resampling users) for p2p - base, p2p - mt-lora, p2p+rag - mt-lora+rag and each
method - its shuffled twin; the last again without requests whose paper is, in another version, among the person's
items (hypernet_onnx.data.near_duplicate: copying from it says nothing of how the person writes).
And every method's chat drift: the NLL of the base model's own answers to everyday prompts with the method's
adapter minus without (hypernet_onnx/chat_anchors.py; issue 11 allows +0.05 nats), each anchor at the strength the
app gives that request (app.prompts.request_strength); ``--chat-full`` scores the adapter at its full strength.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from app import retrieval
from app.engine import Engine
from app.hypernet import Hypernet
from app.lora_gguf import write_adapter
from app.models import EMBEDDER_KEY, default_base_model_path
from app.profile import profile_vector
from app.prompts import TASKS, task_messages, task_target, with_examples
from app.store import Store
from app.words import of_store
from hypernet_onnx import chat_anchors
from hypernet_onnx import data as D
from hypernet_onnx.rag_data import RAG_K, person_store
from hypernet_onnx.stats import paired_bootstrap

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ALL_METHODS = ["base", "rag", "p2p", "p2p+rag", "p2p-shuffled", "mt-lora", "oppu", "rag-shuffled", "p2p+rag-shuffled",
               "mt-lora+rag", "p2p+words", "p2p+words-shuffled", "p2p+words+knn", "p2p+words+knn-shuffled"]
MT_LORA_METHODS = {"mt-lora", "mt-lora+rag"}
HYPERNET_METHODS = {"p2p", "p2p+rag", "p2p-shuffled", "p2p+rag-shuffled", "p2p+words", "p2p+words-shuffled",
                    "p2p+words+knn", "p2p+words+knn-shuffled"}
# each "-shuffled" method is its method with everything personal taken from the NEXT user (adapter, words and/or
# retrieved items): own - shuffled is how much of the method's gain needs this person's own documents
PERSON_PAIRS = [("p2p", "p2p-shuffled"), ("rag", "rag-shuffled"), ("p2p+rag", "p2p+rag-shuffled"),
                ("p2p+words", "p2p+words-shuffled"), ("p2p+words+knn", "p2p+words+knn-shuffled")]
MAX_TOKENS = {"headline": 32, "writing": 160}
MAX_PROMPT_TOKENS = 1400         # long abstracts in the headline prompt are cut to fit the context
NLL_MAX_TARGET = 256


class Evaluator:
    def __init__(self, hypernet_path: Path | None, mt_lora: Path | None, oppu_steps: int, workdir: Path,
                 threads: int | None = None, generate: bool = True, scale: float = 1.0, chat: int | None = None,
                 tasks: bool = True, chat_full: bool = False):
        if threads:                          # OPPU's torch training too; llama.cpp and the embedder below
            import torch
            torch.set_num_threads(threads)
        self.engine = Engine(default_base_model_path(), n_ctx=2048, logits_all=True, n_threads=threads)
        self.spec = self.engine.spec
        self.hyper = Hypernet(hypernet_path, self.spec)
        self.mt_lora = mt_lora
        self.oppu_steps = oppu_steps
        self.workdir = workdir
        self.generate = generate               # False: NLL only (no decoding), for cheap large samples
        self.tasks = tasks                     # False: only the chat drift (no task queries scored)
        self.scale = scale                     # the hypernetwork adapters' strength (the app's setting), 1 = as trained
        self.anchors = chat_anchors.load()[:chat]            # chat=0: no chat drift; None: every anchor
        self._chat_nll: dict[tuple, list[float]] = {}        # by (adapter, strength): shuffled reuses p2p's
        self.chat_full = chat_full             # True: chat drift at the full strength, not the app's for chat
        from app.embed import Embedder
        self.embedder = Embedder(threads=threads)
        from rouge_score import rouge_scorer
        self.scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
        self._oppu = None
        from app.words import WordsHead
        self.words_head = WordsHead.beside(self.hyper)        # p2p+words: the person's words (app.words)

    # --- personalization ---------------------------------------------------------
    def profile(self, user: dict) -> tuple[Store, np.ndarray, float]:
        """The person's store (person_store), their chunk embeddings, and the seconds it took."""
        t = time.perf_counter()
        store = person_store(user, self.embedder, self.workdir / f"profile-{user['user']}.db")
        emb = np.concatenate([v for _, v in store.iter_embeddings(EMBEDDER_KEY)])
        return store, emb, time.perf_counter() - t

    def p2p_adapter(self, emb: np.ndarray, uid: str) -> tuple[Path, float]:
        t = time.perf_counter()
        adapter = self.hyper.generate(profile_vector(emb, self.hyper.pooling))
        path = write_adapter(adapter, self.workdir / f"p2p-{uid}.gguf", self.spec)
        return path, time.perf_counter() - t

    def oppu_adapter(self, user: dict) -> tuple[Path, float]:
        if self._oppu is None:
            from hypernet_onnx.oppu import OPPUTrainer
            self._oppu = OPPUTrainer(self.engine.template, steps=self.oppu_steps)
        t = time.perf_counter()
        adapter = self._oppu.train_user(user)
        path = write_adapter(adapter, self.workdir / f"oppu-{user['user']}.gguf", self.spec)
        return path, time.perf_counter() - t

    # --- scoring -------------------------------------------------------------------
    def prompt_for(self, task: str, q: dict, items: list[dict]) -> str:
        msgs = with_examples(task, task_messages(task, q["title"], q["text"]), items)
        prompt = self.engine.chat_prompt(msgs)
        toks = self.engine.tokenize(prompt)
        if len(toks) > MAX_PROMPT_TOKENS:    # keep the end (the template's assistant turn) intact
            words = msgs[-1]["content"].split(" ")
            while len(self.engine.tokenize(prompt)) > MAX_PROMPT_TOKENS and len(words) > 20:
                words = words[: int(len(words) * 0.85)]
                prompt = self.engine.chat_prompt(msgs[:-1] + [{"role": "user", "content": " ".join(words)}])
        return prompt

    def words(self, store: Store):
        """The person's words as the app counts them (app.words.of_store, Tailor.words)."""
        if self.words_head is None:
            raise SystemExit(f"p2p+words needs the words head beside {self.hyper.path} (trained with its adapters)")
        return of_store(self.words_head, store, lambda t: self.engine.tokenize(t, special=False))

    def contexts(self, store: Store):
        """The person's contexts as the app builds them (app.knn.of_documents over Store.titled_documents, as
        Tailor.contexts), each item's keys under the base model, cached by content under the workdir."""
        from app.knn import KnnConfig, of_documents
        cfg = KnnConfig.beside(self.hyper)
        if cfg is None:
            raise SystemExit(f"p2p+words+knn needs knn.json beside {self.hyper.path} (chosen with its adapters)")
        docs = [d | {"text": retrieval.without_heading(d["text"], d["title"])}
                for d in store.titled_documents(retrieval.EXAMPLE_CHUNKS)]
        with self.engine.detached():
            return of_documents(cfg, docs, self.engine, self.engine.model_path.name, self.workdir / "knn")[0]

    def score(self, task: str, q: dict, items: list[dict], bias=None) -> dict:
        """``bias``: the person's words (Words.processor), added to the logits of decoding and NLL alike."""
        prompt = self.prompt_for(task, q, items)
        gold = task_target(task, q["title"], q["text"])
        row = {"rouge1": None, "rougeL": None, "nll": None, "output": None}     # None: not measured (--nll-only)
        if self.generate:
            out = self.engine.complete(prompt, max_tokens=MAX_TOKENS[task], bias=bias).text
            r = self.scorer.score(gold, out)
            row.update(rouge1=r["rouge1"].fmeasure, rougeL=r["rougeL"].fmeasure, output=out)
        target = self.engine.tokenize(gold + "<|im_end|>")[:NLL_MAX_TARGET]
        row["nll"] = self.engine.nll(self.engine.tokenize(prompt), target, bias)
        return row

    def chat_rows(self, method: str, user: str, key: tuple, words=None, contexts=None) -> list[dict]:
        """The chat drift's rows (task "chat", one per anchor) for the adapter now set (and ``words``, the person's
        words, at the strength each anchor gets); computed once per adapter and words."""
        if key not in self._chat_nll:
            self._chat_nll[key] = chat_anchors.chat_nll(self.engine, self.anchors, app_strength=not self.chat_full,
                                                        words=words, contexts=contexts)
        return [{"method": method, "user": user, "query": i, "task": "chat", "rouge1": None, "rougeL": None,
                 "nll": v, "output": None} for i, v in enumerate(self._chat_nll[key])]

    def retrieve(self, store: Store, q: dict, task: str) -> list[dict]:
        """The app's retrieval (app/retrieval.py, the function Tailor calls for a task request)."""
        query = retrieval.task_query(task, q["title"], q["text"])
        return retrieval.examples(store, EMBEDDER_KEY, self.embedder.embed, task, query, RAG_K)[0]

    def run(self, users: list[dict], methods: list[str]) -> dict:
        from tqdm import tqdm
        rows = []    # one per (method, user, query, task)
        prepared = {}
        for u in tqdm(users, desc="profiles"):
            store, emb, t_embed = self.profile(u)
            path, t_h = self.p2p_adapter(emb, u["user"])
            prepared[u["user"]] = {"store": store, "p2p": path, "t_p2p": t_embed + t_h, "t_rag": t_embed,
                                   "near": [D.near_duplicate(q, u["profile"]) for q in u["queries"]]}
            if any("words" in m for m in methods):
                t = time.perf_counter()
                prepared[u["user"]]["words"] = self.words(store)
                prepared[u["user"]]["t_p2p+words"] = prepared[u["user"]]["t_p2p"] + time.perf_counter() - t
            if any("knn" in m for m in methods):
                prepared[u["user"]]["knn"] = self.contexts(store)
        ids = [u["user"] for u in users]
        shuffled = {uid: ids[(i + 1) % len(ids)] for i, uid in enumerate(ids)}
        sec: dict[str, list[float]] = {m: [] for m in methods}
        for m in methods:
            for u in tqdm(users, desc=m):
                p = prepared[u["user"]]
                src = prepared[shuffled[u["user"]]] if m.endswith("-shuffled") else p   # whose adapter and items
                adapter, t_pers = None, 0.0
                words = src["words"] if "words" in m else None
                contexts = src["knn"] if "knn" in m else None
                if m in HYPERNET_METHODS:
                    adapter, t_pers = src["p2p"], p["t_p2p+words" if words else "t_p2p"]
                elif m in MT_LORA_METHODS:
                    adapter, t_pers = self.mt_lora, (p["t_rag"] if "rag" in m else 0.0)
                elif m == "oppu":
                    adapter, t_pers = self.oppu_adapter(u)
                    t_pers += p["t_rag"]
                elif m in ("rag", "rag-shuffled"):
                    t_pers = p["t_rag"]
                scale = self.scale if m in HYPERNET_METHODS else 1.0
                self.engine.set_adapter(adapter, scale)
                sec[m].append(t_pers)
                rows += self.chat_rows(m, u["user"], (str(adapter) if adapter else None, scale if adapter else None,
                                                      id(words) if words else None, id(contexts) if contexts else None),
                                       words, contexts)
                bias = words.processor(scale) if words else None
                bias = contexts.processor(bias) if contexts is not None and bias is not None else bias
                for qi, q in enumerate(u["queries"] if self.tasks else []):
                    for task in TASKS:
                        items = self.retrieve(src["store"], q, task) if "rag" in m else []
                        rows.append({"method": m, "user": u["user"], "query": qi, "task": task,
                                     "near_duplicate": p["near"][qi],
                                     "examples": [it["title"] for it in items], **self.score(task, q, items, bias)})
        self.engine.set_adapter(None)
        for p in prepared.values():
            p["store"].close()
        return summarize(rows, sec, methods, len(users)), rows


def summarize(rows: list[dict], sec: dict, methods: list[str], n_users: int) -> dict:
    res = {"methods": {}, "ci": {}, "n_users": n_users}
    def mean(vals: list) -> float | None:      # None: not measured (an --nll-only or --chat-only run)
        return None if not vals or any(v is None for v in vals) else float(np.mean(vals))

    for m in methods:
        res["methods"][m] = {t: {k: mean([r[k] for r in rows if r["method"] == m and r["task"] == t])
                                 for k in ("rouge1", "rougeL", "nll")} for t in TASKS}
        res["methods"][m]["sec_per_user"] = float(np.mean(sec[m])) if sec[m] else 0.0
    scored = {r["method"] for r in rows if r["task"] in TASKS}

    def ci(rows: list[dict], a: str, b: str) -> dict:
        return {t: {k: None if any(r[k] is None for r in rows if r["method"] in (a, b) and r["task"] == t)
                    else paired_bootstrap(rows, a, b, t, k) for k in ("rougeL", "nll")} for t in TASKS}

    for a, b in [("p2p", "base"), ("p2p", "mt-lora"), ("p2p+rag", "mt-lora+rag")] + PERSON_PAIRS:
        if a in scored and b in scored:
            res["ci"][f"{a} - {b}"] = ci(rows, a, b)
    near = {(r["user"], r["query"]) for r in rows if r["task"] in TASKS and r.get("near_duplicate")}
    if near:    # the person comparisons again without requests whose paper is among the person's items
        res["near_duplicates"] = len(near)
        rest = [r for r in rows if (r["user"], r["query"]) not in near]
        for a, b in PERSON_PAIRS:
            if a in scored and b in scored:
                res["ci"][f"{a} - {b}, no near-duplicate"] = ci(rest, a, b)
    if all(m in scored for m in ("base", "p2p", "p2p-shuffled")):
        # the part of p2p's NLL gain over the base model that needs the person's own profile (issue 11)
        nll = {m: {t: res["methods"][m][t]["nll"] for t in TASKS} for m in ("base", "p2p", "p2p-shuffled")}
        res["person_share"] = {t: None if None in (nll["base"][t], nll["p2p"][t], nll["p2p-shuffled"][t])
                               or nll["base"][t] <= nll["p2p"][t]
                               else (nll["p2p-shuffled"][t] - nll["p2p"][t]) / (nll["base"][t] - nll["p2p"][t])
                               for t in TASKS}
    chat = {m: {(r["user"], r["query"]) for r in rows if r["method"] == m and r["task"] == "chat"} for m in methods}
    if any(chat.values()):      # drift only where base scored the same anchors for the same users (merged runs)
        res["chat"] = {m: {"nll": float(np.mean([r["nll"] for r in rows if r["method"] == m and r["task"] == "chat"])),
                           "drift": paired_bootstrap(rows, m, "base", "chat", "nll")
                           if m != "base" and chat[m] <= chat.get("base", set()) else None}
                       for m in methods if chat[m]}
    return res


def to_markdown(res: dict, title: str) -> str:
    lines = [f"### {title} ({res['n_users']} users)", "",
             "| method | headline R-1 | headline R-L | headline NLL | writing R-1 | writing R-L | writing NLL | s/user |",
             "|---|---|---|---|---|---|---|---|"]
    def f(x: float | None, digits: int) -> str:
        return "–" if x is None else f"{x:.{digits}f}"

    def ci(d: dict | None) -> str:
        return "–" if d is None else f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"

    for m, v in res["methods"].items():
        h, w = v["headline"], v["writing"]
        lines.append(f"| {m} | {f(h['rouge1'], 4)} | {f(h['rougeL'], 4)} | {f(h['nll'], 3)} | {f(w['rouge1'], 4)} | "
                     f"{f(w['rougeL'], 4)} | {f(w['nll'], 3)} | {v['sec_per_user']:.3f} |")
    if res["ci"]:
        lines += ["", "Paired bootstrap (users resampled), mean difference [95% CI]" +
                  (f"; \"no near-duplicate\": without the {res['near_duplicates']} requests whose paper is, in "
                   "another version, among the person's items (hypernet_onnx.data.near_duplicate)"
                   if res.get("near_duplicates") else "") + ":", "",
                  "| comparison | task | ROUGE-L | NLL |", "|---|---|---|---|"]
        for comp, per_task in res["ci"].items():
            for t, d in per_task.items():
                lines.append(f"| {comp} | {t} | {ci(d['rougeL'])} | {ci(d['nll'])} |")
    if res.get("chat"):
        at = ("the adapter at full strength" if res.get("chat_strength", "full") == "full"
              else "at the app's strength for each request")
        lines += ["", f"Everyday chat ({at}): NLL of the base model's own answers (hypernet_onnx/chat_anchors.py), "
                  f"and the drift = method - base [95% CI], allowed up to +{chat_anchors.LIMIT}:", "",
                  "| method | chat NLL | drift |", "|---|---|---|"]
        for m, v in res["chat"].items():
            lines.append(f"| {m} | {v['nll']:.4f} | {ci(v['drift'])} |")
    if res.get("person_share"):
        lines += ["", "Person share of the NLL gain, (p2p-shuffled - p2p) / (base - p2p): " +
                  ", ".join(f"{t} {f(v, 3)}" for t, v in res["person_share"].items())]
    return "\n".join(lines) + "\n"


def merge(dirs: list[Path | str], data: Path | None = None) -> tuple[dict, list[dict]]:
    """Combine finished runs on one data file: shards over disjoint users (run side by side on separate cores)
    and/or runs of different methods on the same users (e.g. the methods that do not depend on the hypernetwork,
    run while it trains). ``DIR:m1,m2`` takes only those methods from DIR (e.g. OPPU from an earlier run of the
    same users when only the hypernetwork changed). Means, seconds per user and the bootstrap CIs are recomputed
    over all rows; every method must cover the same users, so each table row means the same people. Rows of runs
    from before near-duplicates were marked get their mark from ``data`` (default: the runs' file in D.DATA_DIR)."""
    parts, rows = [], []
    for spec in map(str, dirs):
        d, _, keep = spec.partition(":")
        part = json.loads((Path(d) / "results.json").read_text())
        part_rows = [json.loads(line) for line in (Path(d) / "outputs.jsonl").read_text().splitlines() if line]
        if keep:
            wanted = [m.strip() for m in keep.split(",") if m.strip()]
            missing = set(wanted) - set(part["methods"])
            if missing:
                raise SystemExit(f"{d} has no results for {sorted(missing)}")
            part["methods"] = {m: v for m, v in part["methods"].items() if m in wanted}
            part_rows = [r for r in part_rows if r["method"] in wanted]
        parts.append(part)
        rows += part_rows
    if len({p["data"] for p in parts}) != 1:
        raise SystemExit(f"cannot merge runs on different data: {[p['data'] for p in parts]}")
    hyper = {p["hypernet"] for p in parts if set(p["methods"]) & HYPERNET_METHODS}
    if len(hyper) > 1:
        raise SystemExit(f"cannot merge runs with different hypernetworks: {sorted(hyper)}")
    shared = {p.get("mt_lora") for p in parts if set(p["methods"]) & MT_LORA_METHODS}
    if len(shared) > 1:
        raise SystemExit(f"cannot merge runs with different mt-lora adapters: {sorted(map(str, shared))}")
    scales = {p.get("scale", 1.0) for p in parts if set(p["methods"]) & HYPERNET_METHODS}
    if len(scales) > 1:
        raise SystemExit(f"cannot merge runs at different adapter strengths: {sorted(scales)}")
    chat_strength = {p.get("chat_strength", "full") for p in parts if p.get("chat")}   # runs before the rule: full
    if len(chat_strength) > 1:
        raise SystemExit(f"cannot merge chat drifts scored at different strengths: {sorted(chat_strength)}")
    keys = [(r["method"], r["user"], r["query"], r["task"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise SystemExit("cannot merge runs that share users for the same method")
    unmarked = [r for r in rows if r["task"] in TASKS and "near_duplicate" not in r]
    if unmarked:
        path = data or D.DATA_DIR / parts[0]["data"]
        if not Path(path).is_file():
            raise SystemExit(f"rows without a near-duplicate mark need their data file: {path} is missing (--data)")
        people = {u["user"]: u for u in D.load_users(path)}
        for r in unmarked:
            u = people[r["user"]]
            r["near_duplicate"] = D.near_duplicate(u["queries"][r["query"]], u["profile"])
    methods = [m for m in ALL_METHODS if any(m in p["methods"] for p in parts)]
    users = {m: {r["user"] for r in rows if r["method"] == m} for m in methods}
    if len({frozenset(u) for u in users.values()}) != 1:
        raise SystemExit("cannot merge: the methods were run on different users "
                         f"({ {m: len(u) for m, u in users.items()} })")
    sec = {m: [p["methods"][m]["sec_per_user"] for p in parts if m in p["methods"] for _ in range(p["n_users"])]
           for m in methods}
    n = len(users[methods[0]])
    res = summarize(rows, sec, methods, n)
    res.update(data=parts[0]["data"], hypernet=hyper.pop() if hyper else parts[0]["hypernet"],
               mt_lora=shared.pop() if shared else None,
               scale=scales.pop() if scales else 1.0, chat_strength=chat_strength.pop() if chat_strength else None,
               wall_s=max(p["wall_s"] for p in parts), merged_from=[str(d) for d in dirs])
    return res, rows


def write_results(out: Path, res: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "outputs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (out / "results.md").write_text(to_markdown(res, res["data"].split(".")[0]))
    print((out / "results.md").read_text())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--merge", nargs="+", default=None, metavar="DIR[:METHODS]",
                    help="combine finished runs (disjoint users, or other methods on the same users) into --out; "
                         "DIR:m1,m2 takes only those methods from DIR (no evaluation)")
    ap.add_argument("--data", type=Path, default=None, help="a data file (required unless --merge)")
    ap.add_argument("--users", type=int, default=None)
    ap.add_argument("--skip", type=int, default=0, help="skip the first N users (e.g. those used for model selection)")
    ap.add_argument("--methods", default="base,rag,p2p,p2p+rag,p2p-shuffled",
                    help=f"comma-separated subset of {','.join(ALL_METHODS)}")
    ap.add_argument("--hypernet", type=Path, default=None, help="default: assets/hypernet/hypernet.onnx")
    ap.add_argument("--mt-lora", type=Path, default=None, help="GGUF adapter for the mt-lora method")
    ap.add_argument("--oppu-steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (default: all); two runs side by side with 1 each avoid oversubscription")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="strength of the hypernetwork's adapters (p2p, p2p+rag, p2p-shuffled), as the app's setting")
    ap.add_argument("--nll-only", action="store_true",
                    help="score only the gold answers' NLL (no decoding, no ROUGE): cheap, for large samples")
    ap.add_argument("--chat", type=int, default=None, metavar="N",
                    help="score the chat drift on the first N anchors (default: all; 0: none)")
    ap.add_argument("--chat-only", action="store_true",
                    help="score only the chat drift (no task queries): how far each method's adapters move everyday chat")
    ap.add_argument("--chat-full", action="store_true",
                    help="score the chat drift with the adapter at full strength (what training must fix) instead of "
                         "the strength the app gives everyday requests (app.prompts.request_strength)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.merge:
        write_results(a.out, *merge(a.merge, a.data))
        return
    if a.data is None:
        ap.error("--data is required")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}")
    if set(methods) & MT_LORA_METHODS and a.mt_lora is None:
        ap.error("--methods mt-lora / mt-lora+rag need --mt-lora ADAPTER.gguf (python -m hypernet_onnx.mt_lora)")
    if a.chat_only and a.chat == 0:
        ap.error("--chat-only scores the chat anchors: --chat 0 leaves nothing to score")
    users = D.load_users(a.data, None if a.users is None else a.skip + a.users)[a.skip:]
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ev = Evaluator(a.hypernet, a.mt_lora, a.oppu_steps, Path(tmp), a.threads, generate=not a.nll_only,
                       tasks=not a.chat_only, scale=a.scale, chat=a.chat, chat_full=a.chat_full)
        t0 = time.time()
        res, rows = ev.run(users, methods)
    res["data"] = str(a.data.name)
    res["hypernet"] = ev.hyper.id
    if set(methods) & MT_LORA_METHODS:        # which shared LoRA, so merged runs cannot mix two
        res["mt_lora"] = f"{a.mt_lora.name} sha256:{hashlib.sha256(a.mt_lora.read_bytes()).hexdigest()[:16]}"
    res["scale"] = a.scale
    if res.get("chat"):
        res["chat_strength"] = "full" if a.chat_full else "app"
    res["wall_s"] = round(time.time() - t0, 1)
    write_results(a.out, res, rows)


if __name__ == "__main__":
    main()
