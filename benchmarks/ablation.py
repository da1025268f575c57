"""Does rectification help? SupOnly vs self-training vs CISC-R (official and ours), over seeds, on the demo.

    python benchmarks/ablation.py [--seeds 0 1 2] [--rounds 2] [--workdir benchmarks/work/ablation]

Methods (all share each seed's round-0 model, so they differ only in pseudo labels):
  suponly          round 0: labeled images only
  st               plain self-training: argmax labels, weight 1 (`rectify.enabled = false`)
  cisc-official    CISC-R as the paper's code: random guide, `weight_mode = "official"`
  cisc-nearest     ours: nearest guide from the index, `weight_mode = "mean"`
Prints mean ± std over seeds of the final round's val mIoU, of its difference to
self-training with the same seed, and of each round's pseudo-label mIoU, and writes a
JSON record to benchmarks/results/. Rerunning continues where it stopped (finished
steps are skipped).
"""

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
from records import write_record
from rich.table import Table

from cisctool.config import load_config
from cisctool.console import console, set_verbosity
from cisctool.data.demo import make_demo
from cisctool.rounds import run_rounds
from cisctool.runs import RunLayout

METHODS = {
    "st": {"rectify.enabled": False},
    "cisc-official": {"rectify.guide": "random", "rectify.weight_mode": "official"},
    "cisc-nearest": {"rectify.guide": "nearest", "rectify.weight_mode": "mean"},
}
ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT / "work" / "demo_data")
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "ablation")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=JSON",
                        help="config override, e.g. --set train.max_steps=20 (a quick smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    set_verbosity(-1)
    if not (args.data / "cisctool.toml").exists():
        make_demo(args.data)
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.settings)}
    started = time.perf_counter()
    results: dict[str, list[dict]] = {name: [] for name in ("suponly", *METHODS)}
    for seed in args.seeds:
        base = {**overrides, "workdir": str(args.workdir), "train.seed": seed}
        sup = load_config(args.data / "cisctool.toml", {**base, "name": f"seed{seed}-suponly"})
        rows = run_rounds(sup, 0, args.device)
        results["suponly"].append(_record(seed, rows))
        _print_progress("suponly", seed, rows)
        for method, keys in METHODS.items():
            config = load_config(args.data / "cisctool.toml", {**base, **keys, "name": f"seed{seed}-{method}"})
            round0 = RunLayout.of(config).round_dir(0)
            if not round0.exists():
                shutil.copytree(RunLayout.of(sup).round_dir(0), round0)
            rows = run_rounds(config, args.rounds, args.device)
            results[method].append(_record(seed, rows))
            _print_progress(method, seed, rows)
    console.quiet = False
    console.print(_table(results, args.rounds))
    out = write_record("ablation", {
        "seeds": args.seeds, "rounds": args.rounds, "overrides": overrides, "results": results,
        "summary": _summary(results, args.rounds), "seconds": time.perf_counter() - started,
    }, args.device)  # fmt: skip
    console.print(f"wrote {out}")


def _record(seed: int, rows: list) -> dict:
    return {
        "seed": seed,
        "val_miou": [row.val_miou for row in rows],
        "pseudo_raw_miou": [row.raw_miou for row in rows[1:]],
        "pseudo_rectified_miou": [row.rectified_miou for row in rows[1:]],
        "seconds": [row.seconds for row in rows],
    }


def _print_progress(method: str, seed: int, rows: list) -> None:
    console.quiet = False
    console.print(f"{method} seed {seed}: val mIoU per round " + ", ".join(f"{100 * r.val_miou:.2f}" for r in rows))
    console.quiet = True


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _summary(results: dict[str, list[dict]], rounds: int) -> dict:
    summary = {}
    for method, records in results.items():
        final = [record["val_miou"][-1] for record in records]
        baseline = [record["val_miou"][-1] for record in results["st"]]
        entry = {
            "final_val_miou": _mean_std(final),
            # each seed's methods share its round-0 model: the per-seed difference is the fair comparison
            "final_val_miou_minus_st": _mean_std([value - base for value, base in zip(final, baseline, strict=True)]),
        }
        for round_index in range(1, rounds + 1):
            if method != "suponly":
                entry[f"round{round_index}_pseudo_rectified_miou"] = _mean_std(
                    [record["pseudo_rectified_miou"][round_index - 1] for record in records]
                )
        summary[method] = entry
    return summary


def _table(results: dict[str, list[dict]], rounds: int) -> Table:
    summary = _summary(results, rounds)
    table = Table(title=f"ablation on the demo: mean ± std over {len(results['suponly'])} seed(s), %")
    table.add_column("method")
    table.add_column("final val mIoU", justify="right")
    table.add_column("minus self-training, same seed", justify="right")
    for round_index in range(1, rounds + 1):
        table.add_column(f"round {round_index} pseudo mIoU", justify="right")
    for method, entry in summary.items():
        cells = [_pm(entry["final_val_miou"]), _pm(entry["final_val_miou_minus_st"], signed=True)]
        cells += [_pm(entry[f"round{r}_pseudo_rectified_miou"]) if method != "suponly" else "—"
                  for r in range(1, rounds + 1)]  # fmt: skip
        table.add_row(method, *cells)
    return table


def _pm(pair: tuple[float, float], signed: bool = False) -> str:
    return f"{100 * pair[0]:{'+' if signed else ''}.2f} ± {100 * pair[1]:.2f}"


if __name__ == "__main__":
    main()
