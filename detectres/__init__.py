"""detectres: ResNet + Faster R-CNN (C4) object detection, faithful and fast."""

__version__ = "0.1.0"


def __getattr__(name):
    # Import the predictor lazily so `import detectres` stays cheap.
    if name == "Detector":
        from detectres.predictor import Detector

        return Detector
    raise AttributeError(f"module 'detectres' has no attribute {name!r}")


__all__ = ["Detector", "__version__"]
