"""What a run leaves on disk: run layout, atomic writes and hashes, checkpoints, pseudo-label HDF5, index files, locks."""
