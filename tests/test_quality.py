"""The loop detector (app/quality.py) on crafted answers: what a person reads as broken, and what is fine."""
import pytest

from app.quality import check, looped, words

LOOPS = {
    # the shipped screenshot's personalized answer
    "capi x3": "The CAPI is designed to optimize CPython calls, and to make it public. " * 3,
    "sentence x4 with variants": "We propose a new method. we propose a NEW method! We propose a new method; "
                                 "we propose a new method.",
    "one word": "very " * 30,
    "two words": "the model " * 15,
    "list that never ends": "1. Improve the speed. 2. Improve the speed. 3. Improve the speed. 4. Improve the speed.",
}

FINE = {
    "empty": "",
    "short": "Yes.",
    "email": ("Hi Anna, thanks for the draft. I read it this morning and the second section reads well. Could you "
              "add the numbers from last week's run and send it back by Friday? Best, Tom"),
    "title": "Sparse Attention for Long Documents",
    "repeated twice is allowed": "We train the model on the data. Then we test the model on the data.",
    "prose with common phrases": (
        "In this paper we study the problem of learning from few examples. We show that the problem of "
        "learning from noisy labels is related, and we give an algorithm for the problem of learning from "
        "both. Experiments on three benchmarks confirm the analysis."),
}


@pytest.mark.parametrize("name", LOOPS)
def test_loops_are_flagged(name):
    assert looped(LOOPS[name]), check(LOOPS[name])


@pytest.mark.parametrize("name", FINE)
def test_normal_answers_are_not(name):
    assert not looped(FINE[name]), check(FINE[name])


def test_report_says_why():
    c = check("The CAPI is designed to optimize CPython calls. " * 3)
    assert c.top_count == 3 and c.top_ngram in "the capi is designed to optimize cpython calls the capi"
    assert c.words == 24
    assert check("1. Improve the speed. 2. Improve the speed.").words == 6          # numbering is not a word
    assert check("very " * 30).distinct2 == pytest.approx(1 / 29, abs=1e-4)
    assert check("Yes.").distinct2 == 1.0 and check("Yes.").top_count == 0


def test_bundled_prompt_set_covers_every_kind():
    from app.prompts import parse_task
    from app.quality import load_prompts
    ps = load_prompts()
    kinds = {p["kind"] for p in ps}
    assert len(ps) >= 40 and {"everyday", "writing", "topics", "headline", "writing_task"} <= kinds
    assert len({p["id"] for p in ps}) == len(ps)
    # the two trained tasks are posed with the trained prompts, word for word
    assert all(parse_task(p["content"]) for p in ps if p["kind"] in ("headline", "writing_task"))


def test_a_bad_prompt_line_names_file_and_line(tmp_path):
    from app.quality import load_prompts
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "hi"}\n{"task": "poem", "title": "x"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: not a prompt line"):
        load_prompts(f)


def test_quality_command_measures_both_sides_through_the_app(home, tmp_path):
    """`tailor quality` answers each prompt with and without the adapter (the same seeds) and counts loops."""
    import json
    from click.testing import CliRunner
    from app.cli import cli
    from app.prompts import CHAT_STRENGTH
    from tests.conftest import SAMPLES

    bars = []

    def run(*args):
        r = CliRunner().invoke(cli, ["--json", *args], obj={}, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        bars.append(r.stderr)
        return r.stdout
    run("import", str(SAMPLES / "packaging"))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "kind": "everyday", "prompt": "Say hello twice."}\n'
                       '{"id": "b", "task": "headline", "text": "We make package installs reproducible."}\n')
    out = tmp_path / "rows.jsonl"
    res = json.loads(run("quality", "--prompts", str(prompts), "--max-tokens", "12", "--out", str(out)))
    assert res["summary"]["base"]["answers"] == 2 and res["summary"]["personalized"]["answers"] == 2
    assert "answer/s" in bars[-1] and "file" not in bars[-1]      # the progress bar counts answers, not files
    assert res["adapter_version"] == 1 and res["sampling"]["temperature"] > 0     # the chat default samples
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["side"], r["id"]) for r in rows] == [("base", "a"), ("base", "b"), ("personalized", "a"),
                                                    ("personalized", "b")]
    assert all(r["text"] and r["looped"] == looped(r["text"]) for r in rows)
    assert [r["adapter_version"] for r in rows] == [None, None, 1, 1]
    assert [r["strength"] for r in rows] == [None, None, CHAT_STRENGTH, 1.0]     # everyday vs task request
    assert [r["your_words"] for r in rows] == [False, False, True, False]   # no examples in the prompt: the words
    assert all(r["words"] == len(words(r["text"])) for r in rows)    # ("words" still counts the answer's words)
    again = json.loads(run("quality", "--prompts", str(prompts), "--max-tokens", "12"))
    assert again["summary"] == res["summary"]                                      # fixed seeds: reproducible
    greedy = json.loads(run("quality", "--prompts", str(prompts), "--max-tokens", "12", "--greedy",
                            "--repeat-penalty", "1.3"))
    assert greedy["sampling"]["temperature"] == 0 and greedy["sampling"]["repeat_penalty"] == 1.3
    half = json.loads(run("quality", "--prompts", str(prompts), "--max-tokens", "12", "--only", "personalized",
                          "--scale", "0.5"))
    assert list(half["summary"]) == ["personalized"] and half["scale"] == 0.5       # one side, at that strength


def test_chat_defaults_sample_greedy_on_request(tailor):
    from app.core import CHAT_SAMPLING
    from app.engine import GREEDY
    assert tailor.sampling() == CHAT_SAMPLING and CHAT_SAMPLING.temperature > 0
    assert tailor.sampling(seed=5).seed == 5 and tailor.sampling(greedy=True) == GREEDY
    tailor.settings.greedy = True
    assert tailor.sampling() == GREEDY
    tailor.settings.greedy, tailor.settings.seed = False, 9
    assert tailor.sampling().seed == 9
