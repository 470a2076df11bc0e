"""`tailor`: the command line, thin over app.core.Tailor (the GUI uses the same core).

Every command takes --json for machine-readable output. Expected failures print
one line to stderr and exit 1; no traceback.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .offline import force_offline  # noqa: E402

force_offline()     # set, not defaulted: nothing in Tailor goes online (app/offline.py)

from .prompts import ANSWER_TOKENS, CHAT_STRENGTH  # noqa: E402


def _emit(ctx, data, human) -> None:
    if ctx.obj["json"]:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        human(data)


def _core(ctx):
    from .core import Tailor
    from .paths import profile_home
    if ctx.obj.get("core") is None:
        t = Tailor(profile_home(ctx.obj.get("profile")))
        if ctx.obj.get("model"):
            t.settings.model_path = str(Path(ctx.obj["model"]).expanduser().absolute())
        if ctx.obj.get("hypernet"):
            t.settings.hypernet_path = str(Path(ctx.obj["hypernet"]).expanduser().absolute())
        if ctx.obj.get("threads"):
            t.settings.threads = ctx.obj["threads"]
        ctx.obj["core"] = t
        ctx.call_on_close(t.close)
    return ctx.obj["core"]


class _Group(click.Group):
    def invoke(self, ctx):
        from .core import TailorError
        from .engine import PromptTooLongError
        from .hypernet import HypernetError
        from .ingest import IngestError
        from .lora_gguf import AdapterError
        from .models import ModelError
        from .paths import ProfileError
        from .log import log
        try:
            return super().invoke(ctx)
        except (TailorError, HypernetError, AdapterError, ModelError, IngestError, PromptTooLongError,
                ProfileError, OSError) as exc:
            log.warning("%s failed: %s", ctx.invoked_subcommand, exc)
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:      # noqa: BLE001 - a bug: one line here, the traceback in the log
            log.exception("%s crashed", ctx.invoked_subcommand)
            where = ctx.obj["core"].log_path if ctx.obj.get("core") is not None else "tailor.log in the data dir"
            click.echo(f"error: {type(exc).__name__}: {exc} (details in {where})", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--model", type=click.Path(dir_okay=False), help="base GGUF (default: bundled SmolLM2-135M-Instruct)")
@click.option("--hypernet", type=click.Path(dir_okay=False), help="hypernetwork ONNX (default: bundled)")
@click.option("--threads", type=int, default=0, help="CPU threads (default: all)")
@click.option("--profile", envvar="TAILOR_PROFILE", default=None,
              help="which profile (its own documents, adapters, chats; default: the default profile)")
@click.pass_context
def cli(ctx, as_json, model, hypernet, threads, profile):
    """Tailor: a local language model that writes like you, adapted from your own documents."""
    ctx.ensure_object(dict)
    ctx.obj.update(json=as_json, model=model, hypernet=hypernet, threads=threads, profile=profile)


def _progress_bar(label, unit="file"):
    from tqdm import tqdm
    bar = tqdm(desc=label, unit=unit, file=sys.stderr, leave=False)

    def cb(done, total, path):
        bar.total = total
        bar.n = done
        bar.set_postfix_str(Path(path).name[-30:] if path else "")
        bar.refresh()
    return bar, cb


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--no-adapt", is_flag=True, help="do not regenerate the adapter afterwards")
@click.pass_context
def import_(ctx, paths, no_adapt):
    """Import files and folders (txt, md, html, pdf, docx, eml, mbox, json, jsonl)."""
    from .core import TailorError
    missing = [p for p in paths if not os.path.lexists(Path(p).expanduser())]
    if missing:     # a mistyped argument is a usage error, not a failed document to remember
        raise TailorError(f"{missing[0]}: no such file or folder" + (f" (and {len(missing) - 1} more)"
                                                                       if len(missing) > 1 else ""))
    t = _core(ctx)
    bar, cb = _progress_bar("importing")
    summary = t.import_paths(paths, progress=cb)
    bar.close()
    data = summary.as_dict()
    if not no_adapt and t.adapter_stale():
        data["adapter"] = t.adapt().as_dict()
    if not no_adapt:                 # the new documents' contexts (app.knn), so no answer waits for them
        bar, cb = _progress_bar("reading contexts", unit="document")
        t.contexts(compute=True, progress=cb)
        bar.close()

    def human(d):
        click.echo(f"imported {d['imported']}, unchanged {d['unchanged']}, duplicates {d['duplicates']}, "
                   f"failed {len(d['failed'])}")
        for f in d["failed"]:
            click.echo(f"  failed: {f['path']}: {f['error']}")
        if "adapter" in d:
            click.echo(f"adapter v{d['adapter']['version']} ready in {d['adapter']['ms']['total']:.0f} ms")
    _emit(ctx, data, human)


@cli.command()
@click.pass_context
def docs(ctx):
    """List imported documents with their status and errors."""
    data = _core(ctx).docs()

    def human(rows):
        if not rows:
            click.echo("no documents yet: `tailor import PATH`")
        for d in rows:
            extra = f"  ({d['error']})" if d["error"] else ""
            click.echo(f"{d['id']:>5}  {d['status']:<9} {d['n_chunks']:>5} chunks  {d['path']}{extra}")
    _emit(ctx, data, human)


@cli.command()
@click.argument("ident")
@click.pass_context
def forget(ctx, ident):
    """Forget a document (ID or PATH): its text, chunks, embeddings and the adapters made from it."""
    data = _core(ctx).forget(ident).as_dict()
    _emit(ctx, data, lambda d: click.echo(f"forgot {d['forgotten']}; deleted adapters {d['adapters_deleted']}"))


@cli.command()
@click.pass_context
def info(ctx):
    """Models, hypernetwork, adapter versions and the data directory."""
    _emit(ctx, _core(ctx).info(), lambda d: click.echo(json.dumps(d, indent=2, default=str)))


@cli.command()
@click.pass_context
def adapt(ctx):
    """Regenerate the adapter from the current profile."""
    data = _core(ctx).adapt().as_dict()
    _emit(ctx, data, lambda d: click.echo(f"adapter v{d['version']} at {d['path']} "
                                          f"({', '.join(f'{k} {v:.0f} ms' for k, v in d['ms'].items())})"))


def _answer_opts(f):
    f = click.option("--no-adapter", is_flag=True, help="answer with the base model")(f)
    f = click.option("--scale", type=float, default=None,
                     help="adapter strength (0 = off, 1 = as trained) of a title/abstract task request; any other "
                          f"request gets {CHAT_STRENGTH:.0%} of it")(f)
    f = click.option("--rag/--no-rag", default=None,
                     help="put the top-k matching passages in the prompt and list them as sources")(f)
    f = click.option("--examples/--no-examples", default=None,
                     help="a title/abstract task request gets your k nearest documents as worked examples "
                          "(default: on, the setting 'examples')")(f)
    f = click.option("--words/--no-words", default=None,
                     help="raise your documents' own vocabulary in answers that hold none of them (default: on, "
                          "the setting 'words'; with the adapter only)")(f)
    f = click.option("--k", type=int, default=None, help="passages to retrieve")(f)
    f = click.option("--max-tokens", type=int, default=ANSWER_TOKENS, show_default=True)(f)
    f = click.option("--seed", type=int, default=None, help="seed for a reproducible answer (default: a fresh one)")(f)
    f = click.option("--greedy", is_flag=True, default=None, help="always the likeliest token (no sampling)")(f)
    return f


@cli.command()
@click.argument("prompt")
@_answer_opts
@click.pass_context
def ask(ctx, prompt, no_adapter, scale, rag, examples, words, k, max_tokens, seed, greedy):
    """Answer one prompt."""
    ans = _core(ctx).ask(prompt, use_adapter=not no_adapter, scale=scale, rag=rag, k=k, max_tokens=max_tokens,
                         seed=seed, greedy=greedy, examples=examples, words=words)
    data = {"text": ans.text, "adapter_version": ans.adapter_version, "strength": ans.strength,
            "words": ans.words, "sources": ans.sources}

    def human(d):
        click.echo(d["text"])
        for s in d["sources"]:
            click.echo(f"  [source] {s['path']}")
        from .core import adapter_badge
        click.echo(f"[{adapter_badge(d['adapter_version'], d['strength'], d['words'])}]", err=True)
    _emit(ctx, data, human)


@cli.command()
@_answer_opts
@click.pass_context
def chat(ctx, no_adapter, scale, rag, examples, words, k, max_tokens, seed, greedy):
    """Chat interactively (streaming). Empty line or Ctrl-D ends."""
    from .core import adapter_badge
    t = _core(ctx)
    chat_id = t.new_chat("terminal chat")
    history: list[dict] = []      # the whole chat; the core sends the newest turns that fit (trim_history)
    click.echo("An empty line or Ctrl-D ends the chat; it is kept with your chats.", err=True)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not line:
            break
        msgs = history + [{"role": "user", "content": line}]
        pieces, sources, active, strength, words_on = t.stream(msgs, use_adapter=not no_adapter, scale=scale,
                                                                rag=rag, k=k, max_tokens=max_tokens, seed=seed,
                                                                greedy=greedy, examples=examples, words=words)
        click.echo("tailor> ", nl=False)
        out = []
        try:
            for p in pieces:
                out.append(p)
                click.echo(p, nl=False)
        except KeyboardInterrupt:
            t.engine.stop()
        click.echo()
        text = "".join(out).strip()
        t.record_message(chat_id, "user", line)
        t.record_message(chat_id, "assistant", text, active, sources)
        history = msgs + [{"role": "assistant", "content": text}]
        for s in sources:
            click.echo(f"  [source] {s['path']}")
        click.echo(f"[{adapter_badge(active, strength, words_on)}]", err=True)


@cli.command()
@click.option("--runs", type=int, default=20, help="adapter swaps to time")
@click.pass_context
def bench(ctx, runs):
    """Speed of the personalization path on this machine (JSON)."""
    from .bench import run_bench
    data = run_bench(_core(ctx), runs=runs)
    _emit(ctx, data, lambda d: click.echo(json.dumps(d, indent=2)))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (this machine only by default)")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--token", envvar="TAILOR_SERVE_TOKEN", default=None,
              help="require 'Authorization: Bearer TOKEN' (needed for any address but this machine's)")
@click.option("--queue", type=int, default=8, show_default=True, help="requests that may wait; more get 429")
@click.pass_context
def serve(ctx, host, port, token, queue):
    """Serve the personalized model as an OpenAI-compatible API (/v1/chat/completions, /v1/models)."""
    from .serve import ServeError, serve as run_server
    t = _core(ctx)
    t.engine            # load the model before announcing the address
    try:
        run_server(t, host, port, token, queue, ready=lambda srv: click.echo(
            f"serving {t.home} on http://{host}:{srv.server_address[1]}/v1 (model 'tailor'); Ctrl-C stops",
            err=True))
    except ServeError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scale", type=float, default=None, help="adapter strength folded into the file (default: the setting)")
@click.pass_context
def export(ctx, dest, scale):
    """Write the current adapter for llama.cpp, llama-cpp-python and Ollama (GGUF LoRA + Modelfile)."""
    data = _core(ctx).export(dest, scale)

    def human(d):
        click.echo(f"adapter v{d['version']} (strength {d['scale']}) -> {d['adapter']}\n"
                   f"  llama.cpp: {d['llama_cpp']}\n  Ollama:    cd {Path(d['modelfile']).parent} && ollama create "
                   f"tailor -f Modelfile\n  Python:    {d['python']}")
        if d["scale"] > CHAT_STRENGTH:      # there, every request gets the folded strength (prompts.request_strength)
            click.echo(f"  Every request there gets strength {d['scale']}; Tailor gives requests other than the two "
                       f"tasks {CHAT_STRENGTH:g} of it. For a general chat model: tailor export DEST --scale "
                       f"{d['scale'] * CHAT_STRENGTH:g}")
    _emit(ctx, data, human)


@cli.command()
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON Lines prompt set (default: the bundled assets/prompts/chat-quality.jsonl)")
@click.option("--max-tokens", type=int, default=ANSWER_TOKENS, show_default=True)
@click.option("--scale", type=float, default=None, help="adapter strength of the personalized side")
@click.option("--only", type=click.Choice(["base", "personalized"]), default=None,
              help="answer with one side only (e.g. personalized, when comparing strengths)")
@click.option("--greedy", is_flag=True, default=None, help="measure greedy decoding instead of the chat default")
@click.option("--temperature", type=float, default=None)
@click.option("--repeat-penalty", type=float, default=None)
@click.option("--presence-penalty", type=float, default=None)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write every answer with its loop check here (JSON Lines)")
@click.pass_context
def quality(ctx, prompts, max_tokens, scale, only, greedy, temperature, repeat_penalty, presence_penalty, out):
    """How often answers loop, base vs personalized, at the chat defaults (or the settings given)."""
    from dataclasses import replace
    from .quality import SIDES, load_prompts, measure
    t = _core(ctx)
    sampling = t.sampling(greedy=greedy)
    changes = {k: v for k, v in (("temperature", temperature), ("repeat_penalty", repeat_penalty),
                                 ("presence_penalty", presence_penalty)) if v is not None}
    sampling = replace(sampling, **changes)
    bar, cb = _progress_bar("answers", unit="answer")
    res = measure(t, load_prompts(prompts), sampling=sampling, max_tokens=max_tokens, scale=scale,
                  progress=lambda i, n: cb(i, n, ""), sides=(only,) if only else SIDES)
    bar.close()
    if out:
        out.write_text("".join(json.dumps(r) + "\n" for r in res["rows"]), encoding="utf-8")

    def human(d):
        s = d["sampling"]
        click.echo(f"temperature {s['temperature']}, repeat penalty {s['repeat_penalty']}, presence penalty "
                   f"{s['presence_penalty']}, max {d['max_tokens']} tokens, adapter v{d['adapter_version']}")
        for side, v in d["summary"].items():
            click.echo(f"{side:>13}: {v['loops']}/{v['answers']} answers loop ({100 * v['loop_share']:.1f}%), "
                       f"{v['mean_words']} words on average")
    _emit(ctx, {k: v for k, v in res.items() if k != "rows"}, human)


@cli.command()
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def wipe(ctx, yes):
    """Delete everything Tailor stored for this profile (documents, adapters, chats, settings); other profiles stay."""
    t = _core(ctx)
    if not yes and not click.confirm(f"Delete everything in {t.home} (this profile's documents, adapters, "
                                     "chats, settings)?", default=False):
        click.echo("nothing deleted")
        return
    t.wipe()
    _emit(ctx, {"wiped": str(t.home)}, lambda d: click.echo(f"deleted {d['wiped']}"))


@cli.group(invoke_without_command=True)
@click.pass_context
def profiles(ctx):
    """List profiles (each has its own documents, adapters and chats); create or delete one."""
    if ctx.invoked_subcommand is None:
        from .paths import profile_names
        names = profile_names()
        _emit(ctx, {"profiles": names, "current": ctx.obj.get("profile") or names[0]},
              lambda d: [click.echo(("* " if n == d["current"] else "  ") + n) for n in d["profiles"]])


@profiles.command("create")
@click.argument("name")
@click.pass_context
def profiles_create(ctx, name):
    from .paths import check_profile_name, profile_home
    path = profile_home(check_profile_name(name), create=True)
    _emit(ctx, {"created": name, "data_dir": str(path)},
          lambda d: click.echo(f"profile {d['created']} at {d['data_dir']}; use it with --profile {d['created']}"))


@profiles.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def profiles_delete(ctx, name, yes):
    """Delete one profile with its documents, adapters and chats (the others stay)."""
    from .paths import delete_profile, profile_home
    path = profile_home(name)
    if not yes and not click.confirm(f"Delete profile {name} and everything in {path}?", default=False):
        click.echo("nothing deleted")
        return
    _emit(ctx, {"deleted": name, "data_dir": str(delete_profile(name))},
          lambda d: click.echo(f"deleted profile {d['deleted']}"))


def _json_after_subcommand(ctx, _param, value) -> None:
    if value:
        ctx.find_root().obj["json"] = True


# `tailor info --json` as well as `tailor --json info`: the flag is accepted on every subcommand
def _all_commands(group):
    for c in group.commands.values():
        yield c
        if isinstance(c, click.Group):
            yield from _all_commands(c)


for _cmd in _all_commands(cli):
    _cmd.params.append(click.Option(["--json"], is_flag=True, expose_value=False, callback=_json_after_subcommand,
                                    help="machine-readable output"))


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
