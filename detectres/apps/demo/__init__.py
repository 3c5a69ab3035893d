"""The video / webcam / image demo: sources, the reader -> model -> writer pipeline, and sinks."""
