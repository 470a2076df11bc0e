"""The prompts: one place, used identically by training, evaluation and the app.

Chat prompts are rendered with the chat template stored in the base GGUF, by
one function, so the tokens the hypernetwork was trained under are the tokens
llama.cpp sees at run time.
"""
from __future__ import annotations

import re
from functools import lru_cache

from jinja2.sandbox import ImmutableSandboxedEnvironment

TASKS = ("headline", "writing")

HEADLINE = "Write a short title for this paper abstract. Reply with the title only.\n\n{text}"
WRITING = "Write the abstract of a paper titled \"{title}\". Reply with the abstract only."


def task_messages(task: str, title: str = "", text: str = "") -> list[dict]:
    """The user turn for a query item posed as ``task`` (see shared/data/README.md)."""
    if task == "headline":
        content = HEADLINE.format(text=text)
    elif task == "writing":
        content = WRITING.format(title=title)
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return [{"role": "user", "content": content}]


REPLY_ONLY = re.compile(r" Reply with the \w+ only\.")     # the templates' format instruction


def _pattern(template: str, field: str) -> re.Pattern:
    """The template word for word; its format instruction (" Reply with the title only.") may be left out,
    as a person asking for a title or an abstract often does."""
    def words(part: str) -> str:
        out, at = "", 0
        for m in REPLY_ONLY.finditer(part):
            out += re.escape(part[at:m.start()]) + "(?:" + re.escape(m.group()) + ")?"
            at = m.end()
        return out + re.escape(part[at:])
    head, _, tail = template.partition("{" + field + "}")
    return re.compile(words(head) + "(?P<x>.+?)" + words(tail) + r"\s*$", re.S)


_FIELDS = {"headline": (HEADLINE, "text"), "writing": (WRITING, "title")}     # each template's one field
_PARSE = {task: (_pattern(template, field), field) for task, (template, field) in _FIELDS.items()}


def parse_task(content: str) -> tuple[str, str, str] | None:
    """(task, title, text) when a request is one of the two task prompts, word for word (the format
    instruction optional); None otherwise.
    The app answers these with retrieval as few-shot examples, the form the evaluation found to help."""
    content = content.strip()
    for task, (pattern, field) in _PARSE.items():
        m = pattern.match(content)
        x = m.group("x").strip() if m else ""
        if x:
            return (task, "", x) if field == "text" else (task, x, "")
    return None


def task_request(task: str) -> tuple[str, str]:
    """The task prompt around its one field, as (before, after). The chat's task menu puts a person's abstract
    (or title) between them, so the request is the trained one word for word (parse_task) and gets the whole
    strength and the worked examples without the person having to know the wording."""
    if task not in _FIELDS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    template, field = _FIELDS[task]
    before, _, after = template.partition("{" + field + "}")
    return before, after


ANSWER_TOKENS = 256      # the longest answer a request gets unless it asks for another (app, CLI, API, quality)
CHAT_STRENGTH = 0.25     # the share of the adapter's strength a request other than the two tasks gets


def request_strength(content: str, strength: float) -> float:
    """The adapter strength a request is answered with: a task request (parse_task) gets the whole strength,
    anything else CHAT_STRENGTH of it. The adapter is trained on the two tasks only, and at full strength it
    pulls every other answer toward abstracts and headlines (the base model's own everyday answers become
    0.32-0.40 nats per token less likely, where issue 11 allows 0.05; at a quarter, 0.027-0.034: MODEL_CARD
    "Everyday chat"). The cost: a task asked in other words keeps under half of the adapter's gain
    (scripts/strength_rule.py). One rule for the app, the CLI, the server and the evaluation's chat drift."""
    return strength if parse_task(content) else strength * CHAT_STRENGTH


def task_target(task: str, title: str, text: str) -> str:
    return title if task == "headline" else text


@lru_cache(maxsize=8)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template)


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     bos_token="", eos_token="")


HISTORY_MESSAGES = 8     # the most turns of a chat sent with a new prompt (the small model drifts on more)


def trim_history(messages: list[dict], fits) -> list[dict]:
    """The newest turns of a chat that the model can take: at most HISTORY_MESSAGES, oldest dropped first
    until ``fits(turns)`` (the rendered prompt leaves room for the answer), starting at a user turn. The
    last message is always kept; if it alone is too long, the engine says so. The one rule for the app,
    the CLI and anything else that chats (Tailor._prepare applies it)."""
    turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["content"]][-HISTORY_MESSAGES:]
    while len(turns) > 1 and (turns[0]["role"] != "user" or not fits(turns)):
        turns = turns[1:]
    return turns


def with_context(messages: list[dict], passages: list[str]) -> list[dict]:
    """Retrieval augmentation: the person's own passages go before the request, in the user turn."""
    if not passages:
        return messages
    context = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
    head = ("Here are passages from my own writing, for reference on my topics and style:\n\n"
            f"{context}\n\n")
    last = messages[-1]
    return messages[:-1] + [{"role": last["role"], "content": head + last["content"]}]


def with_examples(task: str, messages: list[dict], items: list[dict], max_words: int = 100) -> list[dict]:
    """Retrieval augmentation for the two tasks: the person's own retrieved items go before the request as
    earlier turns of the same task (few-shot), so the model sees their titles and abstracts in exactly the form
    it has to answer in. Passages pasted into the request instead made the small model copy them."""
    turns: list[dict] = []
    for it in items:
        words = it.get("text", "").split()
        text = " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")
        turns += task_messages(task, it.get("title", ""), text)
        turns.append({"role": "assistant", "content": task_target(task, it.get("title", ""), text)})
    return turns + messages
