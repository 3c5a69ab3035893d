"""The release number, in one place: ``setup.py`` reads it from this file (without importing detectres),
``detectres.__version__`` re-exports it, and a test holds CHANGELOG.md's latest release to it."""
__version__ = "0.1.0"
