"""Profile pooling (shared by training and the app) and the shared chunker."""
import numpy as np
import pytest

from app.chunking import MAX_WORDS, chunk_document, chunk_text, document_text
from app.profile import input_dim, profile_vector


def test_streaming_pooling_equals_whole_array():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1000, 384)).astype(np.float32)
    whole = profile_vector(emb, "mean_std")
    streamed = profile_vector((emb[i:i + 77] for i in range(0, 1000, 77)), "mean_std")
    assert np.allclose(whole, streamed, atol=1e-5)
    assert np.allclose(whole[:384], emb.mean(0), atol=1e-5) and np.allclose(whole[384:], emb.std(0), atol=1e-4)
    assert profile_vector(emb[:1], "mean").shape == (input_dim("mean"),)


def test_empty_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="import at least one document"):
        profile_vector(iter([]), "mean")


def test_chunks_respect_sentence_boundaries_and_size():
    text = " ".join(f"Sentence number {i} says something." for i in range(200))
    chunks = chunk_text(text)
    assert all(len(c.split()) <= MAX_WORDS for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_title_is_part_of_the_first_chunk_once():
    assert chunk_document("My Title", "Body text here.")[0].startswith("My Title Body")
    assert chunk_document("Notes", "Notes on things. Body text here.") == ["Notes on things. Body text here."]


def test_a_markdown_title_heading_chunks_as_the_same_item_given_as_title_and_text():
    """The app imports notes as Markdown, training and evaluation give items as (title, text): the first chunk,
    and so the profile vector, must not differ by the heading's marks."""
    body = "First sentence of the note. A second one, long enough to count."
    for md in ("# Notes\n\n", "  ## Notes ##\n", "#\tNotes\n\n\n"):
        assert document_text("Notes", md + body) == "Notes\n\n" + body
        assert chunk_document("Notes", md + body) == chunk_document("Notes", body)
    assert document_text("Notes", "# Other heading\n\n" + body) == "Notes\n\n# Other heading\n\n" + body


def test_pooling_100k_chunks_in_bounded_memory():
    """1 to 100,000 chunks: the store streams batches and pooling keeps O(dim) state, never the whole array."""
    import tracemalloc
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((4096, 384)).astype(np.float32)        # 6 MB, reused for every batch
    n_batches = 25                                                      # 102,400 chunks = 157 MB if materialized
    tracemalloc.start()
    for pooling in ("mean", "mean_std"):
        vec = profile_vector((batch for _ in range(n_batches)), pooling)
        assert np.allclose(vec[:384], batch.mean(0), atol=1e-4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * 2**20, peak / 2**20
    assert profile_vector(batch[:1], "mean").shape == (384,)           # and a single chunk works
