"""detectres: ResNet + Faster R-CNN (C4 and FPN) object detection, faithful and fast."""

from detectres.version import __version__


def __getattr__(name):
    # Import the predictor lazily so `import detectres` stays cheap.
    if name == "Detector":
        from detectres.predictor import Detector

        return Detector
    raise AttributeError(f"module 'detectres' has no attribute {name!r}")


__all__ = ["Detector", "__version__"]
