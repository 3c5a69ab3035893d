"""A restricted unpickler for ``.pkl`` weight files (Detectron2 model zoo, MSRA ImageNet ResNets).

Plain ``pickle.load`` runs whatever callable a file names. This unpickler resolves only the globals
that numpy arrays, numpy scalars and plain containers need, so a crafted file is refused before any
of its code runs.
"""
from __future__ import annotations

import collections
import io
import pickle
from typing import Any

# (module, name) pairs a pickle of numpy arrays in plain containers needs, across numpy 1.x and 2.x.
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # protocol-2 pickles rebuild bytes with it
    ("collections", "OrderedDict"),
}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The file asks for something other than numpy arrays and plain containers (a user error: the tools
    report it in one line)."""


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        # latin1 reads Python 2 pickles (the Caffe2-era MSRA files) as well as Python 3 ones
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            if module == "collections":
                return collections.OrderedDict
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {self.source}: it asks to import {module}.{name}, but weight files may "
            "only hold numpy arrays, numpy scalars and plain containers (nothing was executed)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing to load {self.source}: persistent ids are not allowed in weight files")


def safe_load_pickle(path: str) -> Any:
    """Load a ``.pkl`` weight file without running code from it."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return RestrictedUnpickler(io.BytesIO(data), path).load()
    except UnsafePickleError:
        raise
    except Exception as e:
        raise ValueError(f"cannot read {path} as a pickle of numpy arrays: {type(e).__name__}: {e}") from e
