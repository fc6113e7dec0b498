"""Deep-learning thigh-muscle segmentation: label schema, model file, inference, training."""
