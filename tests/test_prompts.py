"""The task prompts: one source for training, evaluation and the app; the app recognises them word for word."""
import pytest

from app.prompts import TASKS, parse_task, task_messages, task_request


def test_task_requests_are_recognised_word_for_word():
    abstract = "We propose caching method lookups per call site.\n\nA second paragraph."
    assert parse_task(task_messages("headline", text=abstract)[0]["content"]) == ("headline", "", abstract)
    title = 'Faster "attribute" lookup'
    assert parse_task(task_messages("writing", title=title)[0]["content"]) == ("writing", title, "")
    assert parse_task("  " + task_messages("writing", title=title)[0]["content"] + "\n") == ("writing", title, "")
    # the format instruction may be left out, as people do; the request is the same
    assert parse_task(f'Write the abstract of a paper titled "{title}".') == ("writing", title, "")
    assert parse_task("Write a short title for this paper abstract.\n\n" + abstract) == ("headline", "", abstract)


def test_other_requests_are_not_tasks():
    assert parse_task("Explain what a calling convention is.") is None
    assert parse_task('Please write the abstract of a paper titled "X". Reply with the abstract only.') is None
    assert parse_task(task_messages("writing", title="X")[0]["content"] + " In French.") is None
    assert parse_task(task_messages("writing", title=" ")[0]["content"]) is None
    assert parse_task(task_messages("headline", text="")[0]["content"]) is None
    assert parse_task('Write the abstract of a paper titled "X". Reply with the title only.') is None
    assert parse_task('Write the abstract of a paper titled "X". Reply with it only.') is None


def test_a_task_request_built_around_a_field_is_the_trained_one():
    """What the chat's task menu writes around an abstract or a title is the training prompt, word for word."""
    for task, x in (("headline", "We cache lookups.\n\nTwo paragraphs."), ("writing", "Faster lookups")):
        before, after = task_request(task)
        assert before + x + after == task_messages(task, title=x, text=x)[0]["content"]
        assert parse_task(before + x + after)[0] == task
    assert {t for t in TASKS if task_request(t)[0]} == set(TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        task_request("summary")


def test_trim_history_keeps_the_newest_turns_that_fit():
    from app.prompts import HISTORY_MESSAGES, trim_history
    chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(21)]
    everything = trim_history(chat, lambda turns: True)
    assert len(everything) <= HISTORY_MESSAGES and everything[-1]["content"] == "m20"
    assert everything[0]["role"] == "user"                     # never starts with an answer
    three = trim_history(chat, lambda turns: len(turns) <= 3)
    assert [m["content"] for m in three] == ["m18", "m19", "m20"]
    assert trim_history(chat, lambda turns: False) == [chat[-1]]   # the request itself always goes
    assert trim_history([{"role": "user", "content": ""}, *chat[-1:]], lambda t: True) == [chat[-1]]
