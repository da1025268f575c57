"""What a run shows: pseudo-label quality statistics, confusion matrices, tables, pictures, plots, the HTML template."""
