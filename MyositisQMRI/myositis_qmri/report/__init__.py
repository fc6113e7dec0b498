"""Per-muscle statistics, edema and fatty-replacement scoring, longitudinal change, exports."""
