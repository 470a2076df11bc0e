"""A markdown table of training runs side by side, read from their checkpoints' logs (issue 11: designs are
compared on the person metric and against the mt-lora control, not on dev NLL alone).

    python -m hypernet_onnx.report runs/v2cpu-mt runs/v2cpu-residual runs/v2cpu-p2p-std [--step 200]
    python -m hypernet_onnx.report --dumps res-kl1-req-dev.npz res-kl1-dev.npz mt-kl1-dev.npz   (train --dump)

With --dumps, runs are compared pairwise on the same dev examples (each run's best checkpoint, its per-example
NLLs): own NLL, shuffled - own, and own - the last run's own (the fair control last), with the evaluation's
paired bootstrap over users.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hypernet_onnx.stats import paired_bootstrap


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


def paired(dumps: list[Path]) -> str:
    """Per run (Trainer.dump_best files of the same examples) and task: own NLL, shuffled - own [CI], and own -
    the last run's own [CI] (a negative difference: better than the control)."""
    ds = {Path(p).name.removesuffix(".npz").removesuffix("-dev"): np.load(p) for p in dumps}
    ref = list(ds.values())[0]
    for name, d in ds.items():
        if list(d["users"]) != list(ref["users"]) or list(d["tasks"]) != list(ref["tasks"]):
            raise SystemExit(f"{name}: other examples than {list(ds)[0]}'s")
    control = list(ds)[-1]
    rows = [{"user": str(u), "query": i, "task": str(t), "method": f"{name}/{k}", "nll": float(d[k][i])}
            for name, d in ds.items() for k in ("dev", "dev_shuffled")
            for i, (u, t) in enumerate(zip(ref["users"], ref["tasks"]))]
    f = lambda c: f"{c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]"                      # noqa: E731
    lines = [f"| run (step) | task | own NLL | shuffled − own [CI] | own − {control} [CI] |", "|---|---|---|---|---|"]
    for name, d in ds.items():
        for t in sorted(set(map(str, ref["tasks"]))):
            own = float(d["dev"][ref["tasks"] == t].mean())
            vs = f(paired_bootstrap(rows, f"{name}/dev", f"{control}/dev", t, "nll")) if name != control else "0"
            lines.append(f"| {name} ({int(d['step'])}) | {t} | {own:.4f} | "
                         f"{f(paired_bootstrap(rows, f'{name}/dev_shuffled', f'{name}/dev', t, 'nll'))} | {vs} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="*")
    ap.add_argument("--step", type=int, default=None, help="the evaluation at this step (default: the last)")
    ap.add_argument("--dumps", type=Path, nargs="+", help="compare these train --dump files pairwise instead")
    a = ap.parse_args(argv)
    print(paired(a.dumps) if a.dumps else table(a.runs, a.step))


if __name__ == "__main__":
    main()
