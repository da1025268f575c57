"""The per-pixel signals the pseudo-label quality report scores, and the class-wise calibration of S.

`report_signals` turns one image's stored and report-only arrays into the
named signals whose AUROC the report gives (`SIGNALS`), each in [0, 1] with
NaN where undefined. Calibration maps S_ŷ to its quantile among correctly
predicted labeled pixels of class ŷ (the question is whether that makes S
comparable across classes; measured, it does not help — reported, not used).
"""

import numpy as np

from cisctool.method.signals import WEIGHT_MODES

SIGNALS = ["confidence", "confidence_where_guided", "cisc", "cisc_calibrated", "cisc_contrast", "confidence_x_cisc",
           *(f"weight_{mode}" for mode in WEIGHT_MODES),
           *(f"confidence_x_weight_{mode}" for mode in WEIGHT_MODES)]  # fmt: skip


def calibrated_cisc(cisc: np.ndarray, predicted: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Each pixel's S_ŷ as its quantile level among labeled pixels of class ŷ (NaN when unknown)."""
    levels = np.linspace(0.0, 1.0, table.shape[1])
    out = np.full(cisc.shape, np.nan, dtype=np.float32)
    for cls in np.unique(predicted):
        if cls < len(table) and not np.isnan(table[cls]).any():
            chosen = (predicted == cls) & ~np.isnan(cisc)
            out[chosen] = np.interp(cisc[chosen], table[cls], levels)
    return out


def report_signals(crop: dict[str, np.ndarray], calibration: np.ndarray | None) -> dict[str, np.ndarray]:
    """The per-pixel signals the quality report scores (SIGNALS), in [0, 1], NaN = undefined."""
    confidence = crop["confidence"].astype(np.float32)
    cisc = crop["cisc"].astype(np.float32)
    signals = {
        "confidence": confidence,
        "confidence_where_guided": np.where(np.isnan(cisc), np.nan, confidence),
        "cisc": cisc,
        "cisc_calibrated": (
            calibrated_cisc(cisc, crop["raw_label"], calibration)
            if calibration is not None else np.full_like(cisc, np.nan)
        ),  # fmt: skip
        "cisc_contrast": (crop["contrast"].astype(np.float32) + 1.0) / 2.0,  # [−1, 1] → [0, 1]
        "confidence_x_cisc": confidence * np.nan_to_num(cisc, nan=1.0),  # unguided pixels: confidence
    }
    for mode in WEIGHT_MODES:
        weight = crop[f"weight_{mode}"].astype(np.float32)
        signals[f"weight_{mode}"] = weight
        signals[f"confidence_x_weight_{mode}"] = confidence * weight
    return signals
