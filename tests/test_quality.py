"""The loop detector (app/quality.py) on crafted answers: what a person reads as broken, and what is fine."""
import pytest

from app.quality import check, looped

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
