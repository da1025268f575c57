"""CISC-R against the baselines users pick, on both benchmarks: the record behind docs/baselines.md.

    python benchmarks/compare_baselines.py [--seeds 0,1,2,3,4] [--jobs 10] [--device cuda] [--out DIR]

Writes both benchmark data sets with `cisctool data make-demo` (shapes, and `--kind aerial`), then
runs `cisctool compare` on each, the two at once, each with `--jobs` runs at once: per seed one
round 0 (suponly) and, continuing it, st, threshold (τ 0.95), stpp (ST++'s stability selection),
oracle (the true masks) and cisc, `--rounds` rounds each. Each benchmark's record holds compare's
own record (every arm's final val mIoU per seed, CISC-R minus each baseline per seed, the share of
the SupOnly → oracle gap each arm closes, the protocol, commit, machine and command), the wall time
and the command. On an H100 the whole of it (60 runs) is meant to fit in 8 minutes at the default
10 + 10 runs at once. `--labeled/--unlabeled/--val` and `--set KEY=VALUE` make a smoke run (tiny
splits, a few steps) that checks the script on a CPU; such a record says so (`smoke`).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from records import progress, write_record

ROOT = Path(__file__).resolve().parent
KINDS = ("shapes", "aerial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=10, help="runs at once per benchmark (both run at once)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--baselines", default="st,threshold,stpp,oracle")
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "compare_baselines", help="data and runs")
    parser.add_argument("--results", type=Path, default=None, help="where the records go [benchmarks/results]")
    parser.add_argument("--labeled", type=int, default=None)
    parser.add_argument("--unlabeled", type=int, default=None)
    parser.add_argument("--val", type=int, default=None)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.results is not None:
        os.environ["CISCTOOL_RESULTS"] = str(args.results)
    started = time.time()
    configs = {kind: make_data(kind, args) for kind in KINDS}
    data_seconds = time.time() - started
    progress(f"data written in {data_seconds:.0f} s")
    commands = {kind: compare_command(config, args) for kind, config in configs.items()}
    seconds = run_at_once(commands, args.out)
    for kind, config in configs.items():
        name = tomllib.loads(config.read_text())["name"]
        comparison = json.loads((args.out / f"work-{kind}" / "runs" / f"{name}-compare.json").read_text())
        payload = {
            "what": "final val mIoU (fractions) of every arm per seed; every arm continues its seed's round 0 "
                    "(suponly) with the same TTA views, budget, steps and round-1 image count (see protocol)",
            "kind": kind, "smoke": bool(args.settings or args.labeled or args.unlabeled or args.val),
            "compare_command": " ".join(commands[kind]), "data_seconds": data_seconds,
            "wall_seconds": seconds[kind], "summary": summary(comparison), "comparison": comparison,
        }  # fmt: skip
        progress(f"{kind}: {summary(comparison)}")
        print(f"wrote {write_record(f'compare-baselines-{kind}', payload, args.device)}")


def make_data(kind: str, args: argparse.Namespace) -> Path:
    """`cisctool data make-demo` of one kind (split sizes as given); returns its cisctool.toml."""
    out = args.out / f"data-{kind}"
    command = [sys.executable, "-m", "cisctool", "data", "make-demo", str(out), "--kind", kind]
    for option in ("labeled", "unlabeled", "val"):
        if getattr(args, option) is not None:
            command += [f"--{option}", str(getattr(args, option))]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out / "cisctool.toml"


def compare_command(config: Path, args: argparse.Namespace) -> list[str]:
    """The `cisctool compare` of one benchmark, its runs under OUT/work-<kind>."""
    workdir = args.out / f"work-{config.parent.name.removeprefix('data-')}"
    settings = [item for setting in args.settings for item in ("--set", setting)]
    return [sys.executable, "-m", "cisctool", "--quiet", "--config", str(config), "--set", f"workdir={json.dumps(str(workdir))}",
            *settings, "compare", "--rounds", str(args.rounds), "--seeds", args.seeds, "--baselines", args.baselines,
            "--jobs", str(args.jobs), "--device", args.device]  # fmt: skip


def run_at_once(commands: dict[str, list[str]], out: Path) -> dict[str, float]:
    """Start every compare, wait for all; each one's wall seconds. A failure names its log."""
    started, processes, seconds = time.time(), {}, {}
    for kind, command in commands.items():
        log = out / f"compare-{kind}.log"
        with open(log, "w") as handle:
            processes[kind] = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    for kind, process in processes.items():
        if process.wait() != 0:
            sys.exit(f"{out / f'compare-{kind}.log'}: `cisctool compare` exited with {process.returncode}")
        seconds[kind] = time.time() - started
        progress(f"{kind}: compare done after {seconds[kind]:.0f} s")
    return seconds


def summary(comparison: dict) -> dict:
    """In val mIoU points: each arm's mean ± std and gap share, CISC-R minus each baseline and its sign count."""
    arms = {arm: {"mean": 100 * entry["final_mean_std"][0], "std": 100 * entry["final_mean_std"][1],
                  "gap_share": entry["gap_share"]} for arm, entry in comparison["arms"].items()}  # fmt: skip
    paired = {pair: {"mean": 100 * entry["mean_std"][0], "std": 100 * entry["mean_std"][1],
                     "seeds_ahead": f"{entry['seeds_ahead']}/{len(entry['per_seed'])}"}
              for pair, entry in comparison["paired"].items() if pair.startswith("cisc - ")}  # fmt: skip
    return {"arms": arms, "paired": paired}


if __name__ == "__main__":
    main()
