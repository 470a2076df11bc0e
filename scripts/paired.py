#!/usr/bin/env python
"""Paired comparison of one method across two evaluation runs on the same users (e.g. the same method measured
with two versions of the code), with the evaluation's paired bootstrap over users:

    python scripts/paired.py runs/s7/peps-rag:rag runs/s7/old-peps-rag:rag

Prints, per task and metric (ROUGE-1, ROUGE-L, NLL), mean(A) - mean(B) [95% CI]. Refuses runs on other data or other users.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypernet_onnx.stats import paired_bootstrap  # noqa: E402

TASKS = ("headline", "writing")


def rows_of(spec: str, label: str) -> tuple[str, list[dict]]:
    d, _, method = spec.partition(":")
    res = json.loads((Path(d) / "results.json").read_text())
    rows = [json.loads(x) for x in (Path(d) / "outputs.jsonl").read_text().splitlines() if x]
    return res["data"], [{**r, "method": label} for r in rows if r["method"] == method]


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__)
    (data_a, a), (data_b, b) = rows_of(argv[0], "A"), rows_of(argv[1], "B")
    if data_a != data_b:
        sys.exit(f"different data: {data_a} vs {data_b}")
    if {(r["user"], r["query"], r["task"]) for r in a} != {(r["user"], r["query"], r["task"]) for r in b}:
        sys.exit("the runs cover different users or queries")
    print(f"{argv[0]} - {argv[1]} on {data_a}, {len({r['user'] for r in a})} users")
    for t in TASKS:
        for k in ("rouge1", "rougeL", "nll"):
            if any(r.get(k) is None for r in a + b):          # older runs kept no ROUGE-1; NLL-only runs no ROUGE
                continue
            d = paired_bootstrap(a + b, "A", "B", t, k)
            print(f"  {t:<9} {k:<7} {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")


if __name__ == "__main__":
    main(sys.argv[1:])
