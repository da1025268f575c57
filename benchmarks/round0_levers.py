"""Round-0 recipe levers (optimizer, warm-up, consistency weight λ) by paired seeds on one benchmark kind.

    python benchmarks/round0_levers.py --kind aerial --seeds 0 1 2 \\
        --arm sgd-l0 train.consistency_weight=0 --arm sgd-l1 train.consistency_weight=1

Each arm is a list of config overrides (TOML values) on the kind's generated config;
every arm of a seed trains from that seed's initialisation and sample stream, so the
per-seed difference to the first arm is the fair comparison. Prints val mIoU per arm
(mean ± std), the paired difference to the first arm with the number of seeds where
it is positive, the lowest class IoU, and writes a JSON record to benchmarks/results/.
Rerunning skips finished runs.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.table import Table

from cisctool.cli.options import parse_setting
from cisctool.config import load_config
from cisctool.console import console, set_verbosity
from cisctool.data.demo import make_demo
from cisctool.steps.rounds import run_rounds
from cisctool.store.layout import RunLayout

from records import write_record

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["shapes", "aerial"], default="shapes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arm", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"))
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "levers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    set_verbosity(-1)
    data = ROOT / "work" / args.kind
    if not (data / "cisctool.toml").exists():
        make_demo(data, kind=args.kind)
    arms = {name: dict(parse_setting(item) for item in items) for name, *items in args.arm}
    started = time.perf_counter()
    results: dict[str, list[dict]] = {name: [] for name in arms}
    for seed in args.seeds:
        for name, overrides in arms.items():
            config = load_config(data / "cisctool.toml", {
                **overrides, "workdir": str(args.workdir), "train.seed": seed, "name": f"{args.kind}-s{seed}-{name}",
            })  # fmt: skip
            run_rounds(config, 0, args.device)
            val = (_metrics(config).get("val") or {})
            results[name].append({"seed": seed, "val_miou": val.get("mean_iou"), "per_class_iou": val.get("per_class_iou")})
            console.quiet = False
            console.print(f"{args.kind} seed {seed} {name}: val mIoU {100 * val.get('mean_iou', float('nan')):.2f}")
            console.quiet = True
    console.quiet = False
    console.print(_table(results, args.kind))
    out = write_record(f"round0-levers-{args.kind}", {
        "kind": args.kind, "seeds": args.seeds, "arms": arms, "results": results,
        "seconds": time.perf_counter() - started,
    }, args.device)  # fmt: skip
    console.print(f"wrote {out}")


def _metrics(config) -> dict:
    import json

    return json.loads(RunLayout.of(config).metrics(0).read_text())


def _table(results: dict[str, list[dict]], kind: str) -> Table:
    first = next(iter(results.values()))
    table = Table(title=f"round 0 on {kind}: val mIoU %, {len(first)} seed(s)")
    for column in ("arm", "mean ± std", f"minus {next(iter(results))}, same seed", "seeds > 0", "lowest class IoU"):
        table.add_column(column, justify="right")
    for name, records in results.items():
        values = [record["val_miou"] for record in records]
        differences = [value - base["val_miou"] for value, base in zip(values, first, strict=True)]
        lowest = min(min(v for v in record["per_class_iou"].values() if v is not None) for record in records)
        table.add_row(name, _pm(values), _pm(differences, signed=True),
                      f"{sum(d > 0 for d in differences)}/{len(differences)}", f"{100 * lowest:.1f}")  # fmt: skip
    return table


def _pm(values: list[float], signed: bool = False) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):{'+' if signed else ''}.2f} ± {100 * std:.2f}"


if __name__ == "__main__":
    main()
