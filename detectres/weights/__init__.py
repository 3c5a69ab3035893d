"""Weight files: safe reading, conversion from torchvision / MSRA / Detectron2, loading, and restoring
a model from a checkpoint or a config plus weights."""
from detectres.weights.loading import FORMATS, Weights, load_model_weights, load_weights_into, read_weights

__all__ = ["FORMATS", "Weights", "load_model_weights", "load_weights_into", "read_weights"]
