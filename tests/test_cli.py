"""The `tailor` CLI: each command's --json output and clean errors (real core, real models)."""
import json

from click.testing import CliRunner

from app.cli import cli
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
    assert base["adapter_version"] is None

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
    before = json.loads(run("info").stdout)["adapters"]
    out = json.loads(run("bench", "--runs", "2").stdout)
    swap = out["adapter_swap_ms"]
    assert swap["runs"] == 2 and 0 < swap["p50"] <= swap["p90"]
    assert set(swap["stages_p50"]) == {"hypernet", "write", "load"}
    assert out["first_token_after_swap_ms"]["p50"] > 0
    assert out["decode_tokens_per_s"]["with_adapter"] > 0 and out["decode_tokens_per_s"]["without"] > 0
    emb = out["embedding"]
    assert emb["chunks"] == 256 and emb["onnx_chunks_per_s"] > 0
    assert set(emb["sentence_transformers_by_batch"]) == {"8", "32"}
    assert abs(emb["speedup"] - emb["onnx_chunks_per_s"] / emb["sentence_transformers_chunks_per_s"]) < 0.02
    assert emb["cosine_min"] >= 0.99                      # the fast path is still the same embedding
    assert json.loads(run("info").stdout)["adapters"] == before   # ran in a throwaway data dir
