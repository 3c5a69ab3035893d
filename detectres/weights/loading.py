"""Load a detectres checkpoint or a plain state_dict into a model, reporting every mismatch by name."""
from __future__ import annotations

import logging

import torch
from torch import nn

from detectres.engine.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)


class WeightsMismatchError(ValueError):
    pass


def extract_state_dict(obj: dict) -> dict[str, torch.Tensor]:
    """A detectres checkpoint keeps its weights under ``model``; a plain state_dict is itself."""
    if isinstance(obj.get("model"), dict):
        return obj["model"]
    return obj


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], *, strict: bool = True,
                            source: str = "weights") -> dict[str, list[str]]:
    """Copy matching tensors into ``model``.

    Strict (default): any missing, unexpected or shape-mismatched key raises, naming the keys.
    Not strict: mismatched shapes are skipped (e.g. a new class count) and everything is logged.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape_mismatch = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    report = {"missing": missing, "unexpected": unexpected, "shape_mismatch": shape_mismatch}
    problems = [f"{name} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
                for name, keys in report.items() if keys]
    if problems and strict:
        raise WeightsMismatchError(f"{source} do not fit the model (pass strict=False for a partial load):\n  "
                                   + "\n  ".join(problems))
    for line in problems:
        logger.warning("%s: %s", source, line)
    bad = {k.split(":")[0] for k in shape_mismatch}
    usable = {k: v for k, v in state_dict.items() if k in own and k not in bad}
    model.load_state_dict(usable, strict=False)
    return report


def load_model_weights(model: nn.Module, path: str, *, strict: bool = True) -> dict[str, list[str]]:
    """Load ``path`` (a detectres checkpoint or a state_dict saved with torch.save) into ``model``."""
    state = extract_state_dict(load_checkpoint(path))
    return load_state_dict_checked(model, state, strict=strict, source=path)
