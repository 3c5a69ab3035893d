"""Loading weights into detectres models, safely (no code runs while reading a file)."""
from detectres.weights.loading import FORMATS, Weights, load_model_weights, load_weights_into, read_weights

__all__ = ["FORMATS", "Weights", "load_model_weights", "load_weights_into", "read_weights"]
