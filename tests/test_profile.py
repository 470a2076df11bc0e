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
    assert document_text("Notes", "# Notes\n\nbody") == "# Notes\n\nbody"
