"""FreeMatch's self-adaptive class thresholds (Wang et al., ICLR 2023), estimated once per round.

A fixed confidence threshold (FixMatch's 0.95) keeps few pixels of the classes that a model trained
on few labels is least sure of, so those classes learn least from their pseudo labels. FreeMatch
sets the global threshold to the model's mean confidence τ̄ on the unlabeled data and scales it
per class by the class's mean probability over the largest one: τ_c = τ̄ · p̄_c / max_k p̄_k.
FreeMatch tracks τ̄ and p̄ by EMA over training batches; offline, one pass over the fixed sample
of unlabeled images that distribution alignment reads gives both. A pixel predicted as c with
confidence under τ_c gets the ignore label; the pixels kept keep their CISC weights.
"""

import numpy as np


def self_adaptive_thresholds(mean_prediction: np.ndarray, mean_confidence: float) -> np.ndarray:
    """Per-class thresholds τ̄ · p̄_c / max_k p̄_k (all 0 when no class was predicted)."""
    largest = float(mean_prediction.max()) if len(mean_prediction) else 0.0
    if largest <= 0:
        return np.zeros(len(mean_prediction), dtype=np.float64)
    return mean_confidence * mean_prediction.astype(np.float64) / largest
