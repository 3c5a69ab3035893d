"""Loading weights into detectres models, safely (no code runs while reading a file)."""
from detectres.weights.loading import load_model_weights

__all__ = ["load_model_weights"]
