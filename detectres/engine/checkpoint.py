"""Training checkpoints: written atomically (temp file + rename), read without unpickling code.

A detectres checkpoint is a dict with ``model`` (state_dict), optionally ``optimizer``,
``scheduler``, ``iteration``, ``rng``, the state of the run's other stateful parts (``ema``: the
averaged weights, which a detector built from the file loads instead of ``model``; ``best``: the best
evaluation so far), and always ``config`` (the resolved config as plain containers) and
``class_names``, so a checkpoint alone rebuilds its model.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch

from detectres.config.safety import read_stored_config
from detectres.config.targets import targets_in
from detectres.utils.comm import is_main_process
from detectres.utils.file_io import atomic_torch_save, atomic_write_text, load_checkpoint

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


def capture_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    if "cuda" in state and torch.cuda.is_available():
        # a run resumed on fewer GPUs restores the first ones
        for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


class ResumeMismatchError(ValueError):
    """The checkpoint to resume was written by a run with another model, other classes or other data."""


def flat(node: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts and lists -> {dotted key: leaf}."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flat(value, f"{prefix}.{key}"))
    return out


def describe_data(identity: dict) -> str:
    files = ", ".join(identity.get("files", []))
    return (f"{files} ({identity.get('images')} images, {identity.get('annotations')} annotations, "
            f"digest {str(identity.get('digest'))[:12]})")


def data_changed(saved: dict, current: dict) -> bool:
    """Whether two data identities name different records, wherever they live: the digests where both were
    made the same way (``digest_format``; before format 2 every box was hashed as text), else the counts."""
    if saved.get("digest") is None or current.get("digest") is None:
        return False
    if saved.get("digest_format", 1) == current.get("digest_format", 1):
        return saved["digest"] != current["digest"]
    return (saved.get("images"), saved.get("annotations")) != (current.get("images"), current.get("annotations"))


def resume_differences(saved: dict, current: dict) -> list[str]:
    """How the run that wrote ``saved`` differs from this one (``current``, what it would save), in what
    ``current`` records: the model config (the initial ``weights`` file aside), the class names in
    order, and the training data."""
    def model_of(state):
        model = dict((state.get("config") or {}).get("model") or {})
        model.pop("weights", None)
        return flat(model, "model")

    out = []
    if "config" in current:
        old, new = model_of(saved), model_of(current)
        out += [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
                for k in sorted(set(old) | set(new)) if old.get(k, "<absent>") != new.get(k, "<absent>")]
    if "class_names" in current and saved.get("class_names") != current["class_names"]:
        out.append(f"class_names: {saved.get('class_names')} -> {current['class_names']}")
    if data_changed(saved.get("data_identity") or {}, current.get("data_identity") or {}):
        out.append(f"training data: {describe_data(saved['data_identity'])} -> "
                   f"{describe_data(current['data_identity'])}")
    return out


class Checkpointer:
    """Saves and resumes training state in ``output_dir``; ``last_checkpoint`` names the newest file.

    Only rank 0 writes (every rank resumes from the same file). Weights that are not finite are
    never written, so the last checkpoint stays the last good one.
    """

    def __init__(self, output_dir: str, *, model, optimizer=None, scheduler=None, scaler=None,
                 extra: dict | None = None, stateful: dict | None = None):
        self.output_dir = output_dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.extra = extra or {}
        self.stateful = dict(stateful or {})  # name -> object with state_dict() / load_state_dict()
        self.stop_reason: str | None = None

    def save(self, name: str, iteration: int, *, mark_last: bool = True, fields: dict | None = None) -> str:
        """Write ``name.pth``; ``mark_last``: it becomes what a resume continues from (not so ``model_best``);
        ``fields``: more entries for this file alone."""
        path = os.path.join(self.output_dir, f"{name}.pth")
        weights = self.model.state_dict()
        bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise FloatingPointError(f"not writing {path}: weights became non-finite ({', '.join(bad[:5])}"
                                     f"{' ...' if len(bad) > 5 else ''}) by iteration {iteration}; "
                                     "the last checkpoint is the last good one")
        if not is_main_process():
            return path
        state = {"model": weights, "iteration": iteration, "rng": capture_rng_state(), **self.extra}
        for key in ("optimizer", "scheduler", "scaler"):
            if getattr(self, key) is not None:
                state[key] = getattr(self, key).state_dict()
        state.update({key: obj.state_dict() for key, obj in self.stateful.items()})
        state.update(fields or {})
        atomic_torch_save(state, path)
        if mark_last:
            atomic_write_text(os.path.basename(path), os.path.join(self.output_dir, LAST_CHECKPOINT))
        return path

    def last_checkpoint(self) -> str | None:
        """The newest complete checkpoint, or None when this folder has none; ``last_checkpoint`` naming a
        file that is gone is an error (it is only ever written after its checkpoint is complete)."""
        marker = os.path.join(self.output_dir, LAST_CHECKPOINT)
        if not os.path.isfile(marker):
            return None
        with open(marker) as f:
            path = os.path.join(self.output_dir, f.read().strip())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{marker} names {path}, which is missing: restore it, or delete {marker} to "
                                    "start over")
        return path

    def resume(self, allow_changes: bool = False) -> int:
        """Restore everything from the last checkpoint; returns the iteration to start from (0 if none).

        The checkpoint must come from the same run: its model config, class names and training data
        (what ``extra`` holds now) must match, unless ``allow_changes`` (then the differences are logged)."""
        path = self.last_checkpoint()
        if path is None:
            logger.warning("resume=true, but %s holds no checkpoint yet: starting from iteration 0", self.output_dir)
            return 0
        state = load_checkpoint(path)
        if state.get("config") is not None:  # a tampered file is refused, not resumed
            state["config"] = read_stored_config(state["config"], path, trusted=targets_in(self.extra.get("config") or {}))
        differences = resume_differences(state, self.extra)
        if differences and not allow_changes:
            raise ResumeMismatchError(f"cannot resume from {path}: it was written by a different run "
                                      f"({'; '.join(differences)}); pass allow_resume_changes=true to resume anyway")
        if differences:
            logger.warning("resuming from %s although %s", path, "; ".join(differences))
        try:
            self.model.load_state_dict(state["model"])
            for key in ("optimizer", "scheduler", "scaler"):
                if getattr(self, key) is not None and state.get(key):  # an empty scaler state: amp was off
                    getattr(self, key).load_state_dict(state[key])
            for key, obj in self.stateful.items():
                if key in state:
                    obj.load_state_dict(state[key])
                else:  # e.g. EMA or periodic evaluation switched on for the rest of the run
                    logger.warning("%s holds no %r state (its run kept none): this run's starts afresh", path, key)
        except (KeyError, RuntimeError, ValueError) as e:
            raise ValueError(f"cannot resume from {path}: {e} (was the config changed since it was written?)") from e
        if "rng" in state:
            restore_rng_state(state["rng"])
        self.stop_reason = state.get("stop_reason")  # the run ended early (early stopping), said why
        return int(state.get("iteration", -1)) + 1
