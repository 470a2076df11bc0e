"""A markdown table of training runs side by side, read from their checkpoints' logs (issue 11: designs are
compared on the person metric and against the mt-lora control, not on dev NLL alone).

    python -m hypernet_onnx.report runs/v2cpu-mt runs/v2cpu-residual runs/v2cpu-p2p-std [--step 200]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def last_eval(run: Path, step: int | None = None) -> tuple[dict, dict]:
    """(train config, the log record of the last evaluation, or of evaluation ``step``)."""
    st = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=False)
    evals = [r for r in st["log"] if "dev" in r and (step is None or r["step"] == step)]
    if not evals:
        raise SystemExit(f"{run}: no evaluation{'' if step is None else f' at step {step}'} in its log")
    return st["train_config"], evals[-1]


def table(runs: list[Path], step: int | None = None) -> str:
    lines = ["| run | step | dev NLL (own) | shuffled | base | headline: shuffled - own [95% CI], share | "
             "writing: shuffled - own [95% CI], share | chat drift |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        _cfg, r = last_eval(run, step)

        def person(task: str) -> str:
            p = (r.get("person") or {}).get(task)
            if p is None:
                return "–"
            share = "–" if p["share"] is None else f"{p['share']:.1%}"
            return f"{p['gap']:+.4f} [{p['lo']:+.4f}, {p['hi']:+.4f}], {share}"
        lines.append(f"| {run.name} | {r['step']} | {r['dev']:.4f} | {r['dev_shuffled']:.4f} | {r['dev_base']:.4f} | "
                     f"{person('headline')} | {person('writing')} | "
                     f"{'–' if r.get('chat_drift') is None else format(r['chat_drift'], '+.4f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--step", type=int, default=None, help="the evaluation at this step (default: the last)")
    a = ap.parse_args(argv)
    print(table(a.runs, a.step))


if __name__ == "__main__":
    main()
