"""Quantitative maps: EPG simulation and water-T2 fitting (t2), fat fraction (dixon), and the
background-noise estimator both use (noise)."""
