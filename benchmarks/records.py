"""The JSON record every benchmark writes to benchmarks/results/: its figures plus machine, versions, commit."""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def progress(message: str) -> None:
    """One line to stderr as soon as a figure is measured, whatever the verbosity: a run killed
    at a time limit (a lent GPU's, say) still leaves what it measured."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_record(name: str, payload: dict, device: str = "cpu") -> Path:
    """`results/<name>-<timestamp>.json` holding `payload` and where and with what it was measured."""
    record = {
        "benchmark": name,
        **payload,
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(), "torch_threads": torch.get_num_threads(),
            "faiss_threads": faiss.omp_get_max_threads(), "device": device,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "faiss": faiss.__version__,
                     "numpy": np.__version__},
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=RESULTS.parent, capture_output=True,
                                 text=True).stdout.strip(),
    }  # fmt: skip
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out
