"""The method: prototypes, guides, CISC maps, weights, relabel/drop, per-batch signals, losses; no I/O."""
