"""Training and comparison: the fit loop, `compare_heads`, metrics, the run report and its plots."""
