"""The `tailor` CLI: each command's --json output and clean errors (real core, real models)."""
import json

from click.testing import CliRunner

from app.cli import cli
from app.prompts import CHAT_STRENGTH, task_messages
from tests.conftest import SAMPLES


def run(*args):
    r = CliRunner().invoke(cli, ["--json", *args], obj={}, catch_exceptions=False)
    return r


def test_cli_flow(home, tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 garbage")
    r = run("import", str(SAMPLES / "packaging"), str(bad))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["imported"] == 4 and out["unchanged"] == 0
    assert [f["path"] for f in out["failed"]] == [str(bad)] and out["failed"][0]["error"]
    assert out["adapter"]["version"] == 1

    docs = json.loads(run("docs").stdout)
    assert {d["status"] for d in docs} == {"ok", "failed"}

    adapt = json.loads(run("adapt").stdout)
    assert adapt["version"] == 2 and set(adapt["ms"]) == {"embed", "hypernet", "write", "load", "total"}

    ans = json.loads(run("ask", "What file format do I work on?", "--rag", "--max-tokens", "24").stdout)
    assert ans["text"] and ans["adapter_version"] == 2 and ans["sources"]
    base = json.loads(run("ask", "What file format do I work on?", "--no-adapter", "--max-tokens", "24").stdout)
    assert base["adapter_version"] is None and base["sources"] == []
    task = task_messages("headline", text="A format for built Python packages that installs without a build.")
    shown = json.loads(run("ask", task[0]["content"], "--k", "2", "--max-tokens", "8").stdout)
    assert len(shown["sources"]) == 2            # worked examples by default (the documents they came from)
    bare = json.loads(run("ask", task[0]["content"], "--no-examples", "--max-tokens", "8").stdout)
    assert bare["sources"] == [] and bare["words"] and not shown["words"]   # the person's words: no documents shown
    plain = json.loads(run("ask", task[0]["content"], "--no-examples", "--no-words", "--max-tokens", "8").stdout)
    assert not plain["words"]
    for prompt, strength, words in (("What file format do I work on?", CHAT_STRENGTH, " · your words"),
                                    (task[0]["content"], 1.0, "")):
        said = CliRunner().invoke(cli, ["ask", prompt, "--max-tokens", "4"], obj={}, catch_exceptions=False)
        assert said.exit_code == 0 and said.stderr.splitlines()[-1] == \
            f"[personalized · adapter v2 · strength {strength:.2f}{words}]", said.stderr   # what the app's chat shows

    info = json.loads(run("info").stdout)
    assert info["profile"]["documents"] == 4 and [a["version"] for a in info["adapters"]] == [2, 1]

    victim = next(d for d in docs if d["status"] == "ok")
    gone = json.loads(run("forget", str(victim["id"])).stdout)
    assert gone["forgotten"] == victim["path"] and gone["adapters_deleted"] == [2, 1]
    assert gone["adapter"]["version"] == 3


def test_cli_errors_are_one_line(home):
    r = CliRunner().invoke(cli, ["adapt"], obj={})
    assert r.exit_code == 1
    assert r.stderr.strip().startswith("error: the profile is empty") and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["forget", "999"], obj={})
    assert r.exit_code == 1 and "no document" in r.stderr


def test_bench_reports_every_number_and_leaves_the_store_alone(home):
    r = run("import", str(SAMPLES / "packaging"))
    assert r.exit_code == 0, r.output
    assert len(list((home / "cache" / "knn").rglob("*.npz"))) == 4     # import reads each document's contexts
    before = json.loads(run("info").stdout)["adapters"]
    out = json.loads(run("bench", "--runs", "2").stdout)
    swap = out["adapter_swap_ms"]
    assert swap["runs"] == 2 and 0 < swap["p50"] <= swap["p90"]
    assert set(swap["stages_p50"]) == {"hypernet", "write", "load"}
    assert out["first_token_after_swap_ms"]["p50"] > 0
    assert out["decode_tokens_per_s"]["with_adapter"] > 0 and out["decode_tokens_per_s"]["without"] > 0
    assert out["decode_tokens_per_s"]["with_adapter_and_words"] > 0                  # the person's words, timed
    assert out["words"]["tokens"] > 100 and out["words"]["count_ms"] > 0
    assert out["decode_tokens_per_s"]["with_adapter_words_and_contexts"] > 0      # and their contexts (app.knn)
    assert out["contexts"]["documents"] == 6 and out["contexts"]["keys"] > 100 * 6 and out["contexts"]["build_ms"] > 0
    emb = out["embedding"]
    assert emb["chunks"] == 256 and emb["onnx_chunks_per_s"] > 0
    assert set(emb["sentence_transformers_by_batch"]) == {"8", "32"}
    assert abs(emb["speedup"] - emb["onnx_chunks_per_s"] / emb["sentence_transformers_chunks_per_s"]) < 0.02
    assert emb["cosine_min"] >= 0.99                      # the fast path is still the same embedding
    assert json.loads(run("info").stdout)["adapters"] == before   # ran in a throwaway data dir


def test_json_is_accepted_after_the_subcommand(home):
    for args in (["info", "--json"], ["docs", "--json"]):
        r = CliRunner().invoke(cli, args, obj={}, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        json.loads(r.stdout)       # machine-readable, not the human form
    before = json.loads(CliRunner().invoke(cli, ["--json", "info"], obj={}).stdout)
    after = json.loads(CliRunner().invoke(cli, ["info", "--json"], obj={}).stdout)
    assert before["data_dir"] == after["data_dir"] == str(home)


def test_the_data_dir_chosen_in_settings_is_the_clis_too(tmp_path, monkeypatch):
    """The app records its data dir with choose_data_dir; the CLI (docs, wipe) must act on that same dir."""
    from app.paths import choose_data_dir, data_dir
    monkeypatch.delenv("TAILOR_HOME")
    monkeypatch.setenv("TAILOR_CONFIG", str(tmp_path / "config"))
    chosen = tmp_path / "my-tailor-data"
    choose_data_dir(chosen)
    assert data_dir() == chosen
    info = json.loads(CliRunner().invoke(cli, ["info", "--json"], obj={}, catch_exceptions=False).stdout)
    assert info["data_dir"] == str(chosen)
    r = CliRunner().invoke(cli, ["wipe", "--yes", "--json"], obj={}, catch_exceptions=False)
    assert json.loads(r.stdout)["wiped"] == str(chosen) and not chosen.exists()
    monkeypatch.setenv("TAILOR_HOME", str(tmp_path / "env-wins"))
    assert data_dir() == tmp_path / "env-wins"


def test_a_damaged_data_dir_setting_is_a_clear_error(tmp_path, monkeypatch):
    from app.paths import data_dir
    monkeypatch.delenv("TAILOR_HOME")
    monkeypatch.setenv("TAILOR_CONFIG", str(tmp_path))
    (tmp_path / "location.json").write_text("{not json")
    import pytest
    with pytest.raises(OSError, match="location.json"):
        data_dir()


def test_a_data_folder_that_is_a_file_is_a_clear_error_naming_its_source(tmp_path, monkeypatch):
    """TAILOR_HOME (or the Settings choice) naming a file got mkdir's bare "[Errno 17] File exists"."""
    from app.paths import choose_data_dir
    a_file = tmp_path / "notes.txt"
    a_file.write_text("kept")
    monkeypatch.setenv("TAILOR_HOME", str(a_file))
    r = CliRunner().invoke(cli, ["info"], obj={})
    assert r.exit_code == 1 and "Errno" not in r.output, r.output
    assert f"the data folder {a_file} (from TAILOR_HOME) is a file, not a folder" in r.stderr
    monkeypatch.delenv("TAILOR_HOME")
    monkeypatch.setenv("TAILOR_CONFIG", str(tmp_path / "config"))
    choose_data_dir(a_file)
    r = CliRunner().invoke(cli, ["info"], obj={})
    assert r.exit_code == 1 and "(from the data-directory setting " in r.stderr, r.output
    assert a_file.read_text() == "kept"


def test_bench_stages_come_from_the_timed_runs(tailor):
    """More runs than adapters kept on disk: the stage medians must still describe every timed run."""
    import numpy as np
    from app.bench import swap_bench
    from app.core import KEEP_ADAPTERS
    tailor.import_paths([SAMPLES / "packaging"])
    tailor.adapt(load=True)
    runs = KEEP_ADAPTERS + 2
    out = swap_bench(tailor, tailor.engine.chat_prompt([{"role": "user", "content": "Hi"}]), runs)
    assert len(out["per_run"]) == runs
    for k in ("hypernet", "write", "load"):
        assert out["stages_p50"][k] == round(float(np.median([ms[k] for ms in out["per_run"]])), 2)
    assert out["p50"] == round(float(np.median([ms["total"] for ms in out["per_run"]])), 2)


def test_a_long_terminal_chat_keeps_answering(home):
    """Past the 2,048-token context the CLI chat used to exit with PromptTooLongError and lose the turn;
    the core now sends the newest turns that fit (prompts.trim_history), for the CLI as for the app."""
    long_line = " ".join(["the interpreter caches attribute lookups on hot paths"] * 40)   # ~400 tokens
    turns = 8
    r = CliRunner().invoke(cli, ["chat", "--max-tokens", "8", "--no-adapter"], obj={},
                           input="".join(f"{i}: {long_line}\n" for i in range(turns)) + "\n",
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("tailor> ") == turns
    assert r.stderr.count("[base model]") == turns and "empty line or Ctrl-D ends" in r.stderr
    from app.core import Tailor
    t = Tailor()
    try:
        (chat,) = t.chats()
        msgs = t.chat_messages(chat["id"])
        assert [m["role"] for m in msgs] == ["user", "assistant"] * turns
    finally:
        t.close()


def test_a_crash_is_one_line_for_the_person_and_a_traceback_in_the_log(home, monkeypatch):
    from app.core import Tailor

    def boom(self):
        raise RuntimeError("boom in docs")
    r = run("import", str(SAMPLES / "packaging"), "--no-adapt")
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(Tailor, "docs", boom)
    r = CliRunner().invoke(cli, ["docs"], obj={})
    assert r.exit_code == 1
    assert r.stderr.strip().count("\n") == 0 and "boom in docs" in r.stderr and "tailor.log" in r.stderr
    assert "Traceback" not in r.stderr
    log = (home / "tailor.log").read_text()
    assert "Traceback" in log and "RuntimeError: boom in docs" in log
    sample = (SAMPLES / "packaging").glob("*.md").__next__().read_text().split("\n\n")[1][:60]
    assert sample and sample not in log                           # never the person's text


def test_export_runs_in_plain_llama_cpp_python_with_the_engines_logits(home, tmp_path):
    """issue 13: the exported GGUF LoRA, loaded by llama-cpp-python's own Llama(lora_path=...), gives the logits
    Tailor's engine gives with the adapter at the exported strength; the Modelfile names base and adapter."""
    import numpy as np
    import llama_cpp
    from pathlib import Path
    from app.core import Tailor
    assert run("import", str(SAMPLES / "packaging")).exit_code == 0
    out = json.loads(run("export", str(tmp_path / "exp"), "--scale", "0.5").stdout)
    adapter, modelfile = Path(out["adapter"]), Path(out["modelfile"])
    assert adapter.is_file() and out["scale"] == 0.5 and out["version"] == 1
    lines = modelfile.read_text().splitlines()
    assert f"FROM {out['base_model']}" in lines and f"ADAPTER ./{adapter.name}" in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines
    said = CliRunner().invoke(cli, ["export", str(tmp_path / "exp2")], obj={}, catch_exceptions=False).stdout
    assert f"--scale {CHAT_STRENGTH:g}" in said                   # strength 1 there is 1 for every request
    quiet = CliRunner().invoke(cli, ["export", str(tmp_path / "exp3"), "--scale", str(CHAT_STRENGTH)], obj={},
                               catch_exceptions=False).stdout
    assert "--scale" not in quiet

    from app.engine import Engine
    t = Tailor()
    eng = Engine(t.model_path, n_ctx=512, logits_all=True)
    tokens = eng.tokenize(eng.chat_prompt([{"role": "user", "content": "Write about packaging."}]))
    eng.set_adapter(Path(t.latest_adapter()["path"]), 0.5)
    ours = eng.logits(tokens)
    eng.set_scale(0.0)
    base = eng.logits(tokens)
    plain = llama_cpp.Llama(model_path=out["base_model"], lora_path=str(adapter), n_ctx=512, logits_all=True,
                            verbose=False, n_threads=2)
    plain.eval(tokens)
    theirs = np.array(plain.scores[:len(tokens)], dtype=np.float32)
    assert np.abs(theirs - ours).max() < 1e-3 * np.abs(ours).max()
    assert np.abs(base - ours).max() > 0.01              # the adapter does change the logits
    t.close()
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "none")], obj={}, env={"TAILOR_HOME": str(tmp_path / "e")})
    assert r.exit_code == 1 and "no adapter yet" in r.stderr


def test_profiles_keep_documents_adapters_and_wipes_apart(home):
    """issue 13: separate profiles in one data dir; --profile picks one; forget/wipe act on one profile only."""
    assert run("profiles", "create", "work").exit_code == 0
    assert run("--profile", "work", "import", str(SAMPLES / "packaging")).exit_code == 0
    assert run("import", str(SAMPLES / "interpreter-performance")).exit_code == 0
    assert json.loads(run("profiles").stdout)["profiles"] == ["default", "work"]
    work = json.loads(run("--profile", "work", "docs").stdout)
    default = json.loads(run("docs").stdout)
    assert work and default and not {d["path"] for d in work} & {d["path"] for d in default}
    w_info = json.loads(run("--profile", "work", "info").stdout)
    assert w_info["data_dir"] == str(home / "profiles" / "work") and w_info["adapters"][0]["version"] == 1

    # a mistyped or malformed profile is an error, not a new empty profile
    r = CliRunner().invoke(cli, ["--profile", "wrok", "docs"], obj={})
    assert r.exit_code == 1 and "no profile 'wrok'" in r.stderr and "tailor profiles create wrok" in r.stderr
    r = CliRunner().invoke(cli, ["profiles", "create", "../evil"], obj={})
    assert r.exit_code == 1 and "profile name" in r.stderr and not (home.parent / "evil").exists()

    # forget in one profile leaves the other alone
    victim = work[0]
    assert run("--profile", "work", "forget", str(victim["id"])).exit_code == 0
    assert len(json.loads(run("--profile", "work", "docs").stdout)) == len(work) - 1
    assert json.loads(run("docs").stdout) == default

    # wiping the default profile keeps the named one, and the reverse
    assert run("wipe", "--yes").exit_code == 0
    assert json.loads(run("docs").stdout) == [] and len(json.loads(run("--profile", "work", "docs").stdout)) == len(work) - 1
    assert run("--profile", "work", "wipe", "--yes").exit_code == 0
    assert json.loads(run("--profile", "work", "docs").stdout) == []
    assert run("profiles", "delete", "work", "--yes").exit_code == 0
    assert json.loads(run("profiles").stdout)["profiles"] == ["default"]
    r = CliRunner().invoke(cli, ["profiles", "delete", "default", "--yes"], obj={})
    assert r.exit_code == 1 and "tailor wipe" in r.stderr


def test_switching_profile_reuses_the_loaded_model(home):
    from app.core import Tailor
    from app.engine import Engine
    from app.paths import profile_home
    t = Tailor()
    t.import_paths([SAMPLES / "packaging"])
    t.adapt(load=True)
    a = t.ask("Say hi.", max_tokens=8, seed=1)
    loads = Engine.loads
    other = t.with_profile(profile_home("work", create=True))
    assert other.ask("Say hi.", max_tokens=8, seed=1).adapter_version is None      # no documents there yet
    other.import_paths([SAMPLES / "interpreter-performance"])
    other.adapt()
    b = other.ask("Say hi.", max_tokens=8, seed=1)
    assert b.adapter_version == 1 and other.latest_adapter()["path"] != t.latest_adapter()["path"]
    assert t.ask("Say hi.", max_tokens=8, seed=1).text == a.text                    # back: the first adapter again
    assert Engine.loads == loads                                                     # nothing reloaded
    other.close(), t.close()


def test_quality_measures_answers_as_long_as_a_person_gets_them():
    """`tailor quality` read 160 tokens while ask, chat, the app and the API answer up to 256: its loop table did
    not measure the answers a person gets. One default, app.prompts.ANSWER_TOKENS, for all of them."""
    import inspect
    from app.core import Tailor
    from app.engine import Engine
    from app.prompts import ANSWER_TOKENS
    from app.quality import measure
    for name in ("ask", "chat", "quality"):
        assert next(p.default for p in cli.commands[name].params if p.name == "max_tokens") == ANSWER_TOKENS, name
    for f in (Tailor.ask, Tailor.stream, Engine.stream, measure):
        assert inspect.signature(f).parameters["max_tokens"].default == ANSWER_TOKENS, f
