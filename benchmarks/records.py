"""The JSON record every benchmark writes: its figures plus the command, machine, versions, commit and load.

Records go to benchmarks/results/, or to the folder named by CISCTOOL_RESULTS (the GPU suite's
output folder). The commit is git's HEAD, or CISCTOOL_COMMIT where the tree has no .git (a copy
on a lent machine). The load average is read when this module is imported (the benchmark's start)
and when the record is written, so a figure measured beside other work says so.
"""

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_AT_START = os.getloadavg()


def progress(message: str) -> None:
    """One line to stderr as soon as a figure is measured, whatever the verbosity: a run killed
    at a time limit (a lent GPU's, say) still leaves what it measured."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def results_folder() -> Path:
    """CISCTOOL_RESULTS when set, else benchmarks/results/."""
    return Path(os.environ.get("CISCTOOL_RESULTS") or RESULTS)


def command_line() -> str:
    """The command that ran this benchmark, as a shell would retype it (script path relative to the repo)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(RESULTS.parent.parent)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def current_commit() -> str:
    """git's HEAD here, else CISCTOOL_COMMIT, else ""."""
    found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=RESULTS.parent, capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else os.environ.get("CISCTOOL_COMMIT", "")


def write_record(name: str, payload: dict, device: str = "cpu") -> Path:
    """`<results>/<name>-<timestamp>.json`: `payload` and where, with what and by which command it was measured."""
    record = {
        "benchmark": name,
        **payload,
        "command": command_line(),
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(), "device": device,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "load_average": {"start": list(LOAD_AT_START), "end": list(os.getloadavg())},
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "faiss": faiss.__version__,
                     "numpy": np.__version__},
        "commit": current_commit(),
    }  # fmt: skip
    out = results_folder() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out
