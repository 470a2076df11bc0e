"""The ONNX embedder reproduces sentence-transformers all-MiniLM-L6-v2 (the reference)."""
import numpy as np

from app import ingest
from app.chunking import chunk_document
from app.models import reference_embedder_dir
from tests.conftest import SAMPLES


def test_onnx_embeddings_match_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer
    chunks = []
    for p in sorted(SAMPLES.glob("*/*.md")):
        d = ingest.extract(p)
        chunks += chunk_document(d.title, d.text)
    chunks += ["short", "a " * 400]                    # truncation at 256 tokens behaves the same
    ours = embedder.embed(chunks)
    ref = SentenceTransformer(str(reference_embedder_dir()), device="cpu").encode(chunks, normalize_embeddings=True)
    cos = (ours * ref).sum(1)
    assert cos.min() >= 0.99, cos.min()
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)


def test_a_texts_vector_does_not_depend_on_what_is_embedded_with_it(embedder):
    """The int8 graph scales activations per tensor: batched, a chunk's vector moved with its batchmates (cosine
    0.995), so a document got another vector when imported with others, and retrieval could order near-ties
    otherwise than the cached vectors the evaluation used."""
    chunks = []
    for p in sorted(SAMPLES.glob("*/*.md"))[:4]:
        d = ingest.extract(p)
        chunks += chunk_document(d.title, d.text)
    together = embedder.embed(chunks)
    for i, c in enumerate(chunks):
        assert np.array_equal(embedder.embed([c])[0], together[i]), i
        assert np.array_equal(embedder.embed([c, "a short other text", "x " * 200])[0], together[i]), i


def test_empty_input(embedder):
    assert embedder.embed([]).shape == (0, 384)


def test_an_embedder_other_than_the_recorded_build_is_refused(tmp_path, monkeypatch):
    """A graph built from other package versions moves every profile vector: refused with the fix named."""
    import shutil

    import pytest

    from app.embed import Embedder
    from app.models import EMBEDDER_ONNX, EMBEDDER_TOKENIZER, ModelError, embedder_files
    onnx_path, tok_path = embedder_files()
    shutil.copyfile(tok_path, tmp_path / EMBEDDER_TOKENIZER)
    data = bytearray(onnx_path.read_bytes())
    data[-1] ^= 1
    (tmp_path / EMBEDDER_ONNX).write_bytes(bytes(data))
    monkeypatch.setenv("TAILOR_MODELS", str(tmp_path))
    with pytest.raises(ModelError, match="not the recorded build.*make models"):
        Embedder()
