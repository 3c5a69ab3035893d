"""Where detectres finds its configs and sample data, and the folders a stored path may be relative to.
Plain Python (no Hydra, no OmegaConf): the stored-config reader uses it too."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent
# An installed package (wheel, ``pip install .``) carries the configs and the sample data inside it; a
# source checkout (and an editable install) reads them from the project's ``configs/`` and ``tests/data/``.
CONFIG_DIR = next((d for d in (PACKAGE_DIR / "configs", PROJECT_ROOT / "configs") if d.is_dir()), PROJECT_ROOT / "configs")
DATA_DIR = next((d for d in (PACKAGE_DIR / "samples", PROJECT_ROOT / "tests" / "data") if d.is_dir()),
                PROJECT_ROOT / "tests" / "data")


def cache_dir() -> str:
    """``$DETECTRES_CACHE``, else ``~/.cache/detectres`` (what ``configs/data/shapes.yaml`` says)."""
    cache = os.environ.get("DETECTRES_CACHE")
    if cache is not None:
        return cache
    return os.path.join(os.environ.get("HOME") or os.path.expanduser("~"), ".cache", "detectres")


def datasets_dir() -> str:
    """``$DETECTRES_DATASETS``, else ``datasets`` (relative to the working folder), as the data configs say."""
    return os.environ.get("DETECTRES_DATASETS", "datasets")


def not_installed_hint(path: str) -> str:
    """For a missing ``path`` inside an installed package's sample folder: why it is not there."""
    samples = PACKAGE_DIR / "samples"
    if DATA_DIR != samples or not os.path.abspath(path).startswith(str(samples) + os.sep):
        return ""
    return (" (an installed detectres ships only generated samples, data=shapes8: coco8 and the sample photos are "
            "test data of the repository, see THIRD_PARTY.md; run from a checkout or point the path at a copy)")


def package_data_dir() -> str:
    """The sample data shipped with detectres (``tests/data`` in a checkout, ``samples`` in a wheel)."""
    return str(DATA_DIR)
