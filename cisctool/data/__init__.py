"""Split files, datasets, transforms, mask I/O and the embedded demo data."""
