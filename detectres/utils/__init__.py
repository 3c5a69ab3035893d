"""The bottom layer's small utilities: distributed helpers, environment, file I/O, precision, resizing,
metrics logging and drawing."""
