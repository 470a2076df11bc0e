"""Profile vectors (mean pooling) of the first 12 mlpapers-dev users: the app's int8 embedder vs sentence-transformers fp32.

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/profile_cosine.py
"""
import numpy as np
from pathlib import Path
from hypernet_onnx import data as D
from app.models import reference_embedder_dir
from app.profile import profile_vector
from sentence_transformers import SentenceTransformer
path = Path(__file__).resolve().parent.parent.parent / "shared/data/mlpapers-dev.jsonl.gz"
users = D.load_users(path, 12)
ours = D.embed_users(path, users, progress=False)
st = SentenceTransformer(str(reference_embedder_dir()), device="cpu")
cos = []
for u in users:
    ref = st.encode(D.profile_chunks(u), normalize_embeddings=True, batch_size=32)
    a, b = profile_vector(ours[u["user"]].astype(np.float32)), profile_vector(ref)
    cos.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
print(f"12 dev users: profile-vector cosine min {min(cos):.5f} mean {np.mean(cos):.5f}; chunks {sum(len(D.profile_chunks(u)) for u in users)}")
