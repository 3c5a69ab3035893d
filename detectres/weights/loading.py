"""Read any supported weight file into detectres names, check it fits the model, and load it.

``path`` may be ``zoo:NAME``: the model zoo's file (:mod:`detectres.weights.zoo`), read the same way.
Formats: ``detectres`` (checkpoints written by training or ``tools/convert_weights.py``),
``torchvision`` (ImageNet ResNet state_dicts), ``msra`` (Caffe2 ImageNet ResNet pickles) and
``detectron2`` (model-zoo ``.pkl`` and Detectron2 ``.pth`` Faster R-CNN C4 and FPN checkpoints).
``.pth`` files are read with ``torch.load(weights_only=True)``, ``.pkl`` files with a restricted
unpickler: no file can run code while it is read.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from detectres.config.safety import check_bounds, check_class_names, read_stored_config
from detectres.data.coco_names import COCO_CLASSES
from detectres.utils.file_io import INFLATION_LIMIT, UnsafeFileError, load_checkpoint
from detectres.weights.detectron2 import convert_detectron2, is_detectron2_state
from detectres.weights.msra import MSRA_BGR_MEAN, MSRA_STD, convert_msra_resnet
from detectres.weights.safe_pickle import safe_load_pickle
from detectres.weights.torchvision import (
    IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, convert_torchvision_resnet, split_for_c4,
)
from detectres.weights.zoo import local_weights

logger = logging.getLogger(__name__)

FORMATS = ("detectres", "torchvision", "msra", "detectron2")
BACKBONE_FORMATS = ("torchvision", "msra")

# The input each format's weights expect, and the backbone form they were trained with.
CONVENTIONS = {
    "torchvision": {"input_format": "RGB", "pixel_mean": IMAGENET_RGB_MEAN, "pixel_std": IMAGENET_RGB_STD,
                    "stride_in_1x1": False},
    "msra": {"input_format": "BGR", "pixel_mean": MSRA_BGR_MEAN, "pixel_std": MSRA_STD, "stride_in_1x1": True},
    "detectron2": {"input_format": "BGR", "pixel_mean": MSRA_BGR_MEAN, "pixel_std": MSRA_STD,
                   "stride_in_1x1": True},
}


class WeightsMismatchError(ValueError):
    pass


@dataclass
class Weights:
    """A weight file in detectres detector names, with what it expects of the model."""

    state_dict: dict[str, torch.Tensor]
    format: str
    meta: dict = field(default_factory=dict)   # input_format, pixel_mean, pixel_std, stride_in_1x1
    class_names: list[str] | None = None
    config: dict | None = None

    @property
    def backbone_only(self) -> bool:
        return self.meta.get("backbone_only", self.format in BACKBONE_FORMATS)


REAL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COUNTERS = (torch.int64, torch.int32)   # BatchNorm's num_batches_tracked


def check_tensors(state: dict, path: str) -> None:
    """Refuse, naming the key, a state dict holding anything but tensors, a tensor of a type a detector
    has no use for (complex, quantized, ...; integer counters only as ``num_batches_tracked``), values that
    are not finite, or more data than :data:`INFLATION_LIMIT` x the file's size (tensors may share or
    broadcast a small storage; what the model copies is their full size)."""
    limit = INFLATION_LIMIT * max(os.path.getsize(path), 1)
    total = 0
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UnsafeFileError(f"refusing to load {path}: {key!r:.80} holds a {type(value).__name__}, not a tensor")
        counter = key.endswith("num_batches_tracked") and value.dtype in COUNTERS
        if value.dtype not in REAL_FLOATS and not counter:
            raise UnsafeFileError(f"refusing to load {path}: {key} is a {value.dtype} tensor; weights are real "
                                  "floating-point tensors")
        total += value.numel() * value.element_size()
        if total > limit:
            raise UnsafeFileError(f"refusing to load {path}: its tensors hold more than {INFLATION_LIMIT}x the "
                                  f"file's {os.path.getsize(path)} bytes (at {key}: {total} bytes)")
        if not counter and not bool(torch.isfinite(value).all()):
            raise UnsafeFileError(f"refusing to load {path}: {key} has values that are not finite (NaN or inf)")


def read_raw(path: str):
    path = local_weights(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".pkl"):
        return safe_load_pickle(path)
    return load_checkpoint(path)


def detect_format(obj, path: str) -> str:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    inner = obj.get("model") if isinstance(obj.get("model"), dict) else None
    if "config" in obj or "meta" in obj:
        return "detectres"
    if inner is not None and is_detectron2_state(inner):
        return "detectron2"
    if inner is not None:
        return "detectres"
    if "conv1_w" in obj or "blobs" in obj:
        return "msra"
    if "conv1.weight" in obj and any(k.startswith("layer1.") for k in obj):
        return "torchvision"
    if is_detectron2_state(obj):
        return "detectron2"
    if any(k.startswith("backbone.") for k in obj):
        return "detectres"
    raise ValueError(f"{path}: cannot tell the weight format (not detectres, torchvision, MSRA or Detectron2); "
                     f"first keys: {list(obj)[:5]}")


def read_weights(path: str, format: str | None = None, *, trusted: Mapping[str, str] | None = None) -> Weights:
    """Read ``path`` in ``format`` (detected from the contents when None) into detectres names.
    ``trusted``: the caller's own config's targets by place, which a stored config may name too
    (see :func:`detectres.config.safety.check_stored_config`). ``zoo:NAME`` reads the model zoo entry's
    file, downloaded first if it is not in the cache (:mod:`detectres.weights.zoo`)."""
    path = local_weights(path)
    weights = convert_weights(read_raw(path), path, format, trusted)
    check_tensors(weights.state_dict, path)
    return weights


def convert_weights(obj, path: str, format: str | None, trusted: Mapping[str, str] | None) -> Weights:
    """A file's contents (``obj``) in detectres names."""
    fmt = format or detect_format(obj, path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}; expected one of {FORMATS}")
    if fmt == "torchvision":
        return Weights(split_for_c4(convert_torchvision_resnet(obj)), fmt, dict(CONVENTIONS[fmt]))
    if fmt == "msra":
        return Weights(split_for_c4(convert_msra_resnet(obj)), fmt, dict(CONVENTIONS[fmt]))
    if fmt == "detectron2":
        state = convert_detectron2(obj["model"] if isinstance(obj.get("model"), dict) else obj)
        cls = state.get("roi_heads.box_predictor.cls_score.weight")
        names = list(COCO_CLASSES) if cls is not None and cls.shape[0] == len(COCO_CLASSES) + 1 else None
        return Weights(state, fmt, dict(CONVENTIONS[fmt]), class_names=names)
    return read_detectres(obj, path, trusted)


def read_detectres(obj: dict, path: str, trusted: Mapping[str, str] | None = None) -> Weights:
    """A detectres checkpoint: its stored config and class names are checked as data first. A checkpoint
    of a run with an EMA of the weights gives the averaged weights (what its evaluations measured)."""
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    ema = obj.get("ema")
    if isinstance(ema, dict) and isinstance(ema.get("model"), dict):
        logger.info("%s: using its EMA weights (the average of %s optimizer steps)", path, ema.get("updates"))
        state = ema["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of weights, found {type(state).__name__}")
    config = obj.get("config")
    if config is not None:
        config = read_stored_config(config, path, trusted)
    names = check_class_names(obj.get("class_names"), path)
    if obj.get("meta") is not None:
        check_bounds(obj["meta"], f"{path} (meta)")
    meta = dict(obj.get("meta") or {})
    if config and isinstance(config.get("model"), dict):
        for key in ("input_format", "pixel_mean", "pixel_std"):
            meta.setdefault(key, config["model"].get(key))
    return Weights(state, "detectres", meta, names, config)


def model_conventions(model: nn.Module) -> dict:
    return {
        "input_format": model.input_format,
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "stride_in_1x1": getattr(model.backbone, "stride_in_1x1", None),
    }


def check_conventions(model: nn.Module, weights: Weights, source: str) -> None:
    """Refuse weights whose input format, normalisation or backbone form differ from the model's."""
    ours = model_conventions(model)
    problems = []
    for key in ("input_format", "pixel_mean", "pixel_std", "stride_in_1x1"):
        want = weights.meta.get(key)
        have = ours[key]
        if want is None or have is None:
            continue
        same = want == have if isinstance(want, (str, bool)) else torch.allclose(
            torch.tensor(want, dtype=torch.float32), torch.tensor(have, dtype=torch.float32), atol=1e-3)
        if not same:
            problems.append(f"{key}: weights expect {want}, model has {have}")
    if problems:
        hint = {"torchvision": "model=r50_c4_tv or r50_fpn_tv (r101_...)", "msra": "model=r50_c4 or r50_fpn (r101_...)",
                "detectron2": "model=r50_c4 or r50_fpn (r101_...)"}.get(weights.format, "a matching model config")
        raise WeightsMismatchError(
            f"{source} ({weights.format} weights) do not match the model's input conventions:\n  "
            + "\n  ".join(problems) + f"\nUse {hint}, or set model.input_format / pixel_mean / pixel_std / "
            "backbone.stride_in_1x1 to what the weights were trained with.")


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], *, strict: bool = True,
                            source: str = "weights", expected_missing: tuple[str, ...] = (),
                            reinitialised: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Copy matching tensors into ``model``.

    Strict (default): any missing, unexpected or shape-mismatched key raises, naming the keys
    (keys starting with ``expected_missing`` may be absent: the heads of a backbone-only file).
    Not strict: mismatched shapes are skipped (e.g. a new class count) and everything is logged.
    Keys starting with ``reinitialised`` are not taken from the file (the caller said why).
    """
    own = model.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(reinitialised)} if reinitialised else state_dict
    expected_missing = (*expected_missing, *reinitialised)
    # BatchNorm step counters carry no weights; ImageNet files converted for FrozenBN drop them.
    missing = [k for k in own if k not in state_dict and not k.startswith(expected_missing)
               and not k.endswith("num_batches_tracked")]
    fresh = [k for k in own if k not in state_dict and k.startswith(expected_missing)]
    unexpected = [k for k in state_dict if k not in own]
    shape_mismatch = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    report = {"missing": missing, "unexpected": unexpected, "shape_mismatch": shape_mismatch}
    problems = [f"{name} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
                for name, keys in report.items() if keys]
    if problems and strict:
        raise WeightsMismatchError(f"{source} do not fit the model (pass strict=False / strict_weights=false "
                                   "for a partial load):\n  " + "\n  ".join(problems))
    for line in problems:
        logger.warning("%s: %s", source, line)
    fresh = [k for k in fresh if not k.startswith(reinitialised)] if reinitialised else fresh
    if fresh:
        logger.info("%s: %d keys not in the file keep their initialisation (%s ...)", source, len(fresh), fresh[0])
    bad = {k.split(":")[0] for k in shape_mismatch}
    usable = {k: v for k, v in state_dict.items() if k in own and k not in bad}
    model.load_state_dict(usable, strict=False)
    return {**report, "initialised": fresh}


def with_aliases(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state_dict`` plus the copies the model asks for: a module's ``weight_aliases`` maps a prefix the
    file lacks to one it has (a separate context branch starts from the file's res5)."""
    out = dict(state_dict)
    for name, module in model.named_modules():
        base = f"{name}." if name else ""
        for missing, present in getattr(module, "weight_aliases", {}).items():
            dst, src = base + missing, base + present
            if any(k.startswith(dst) for k in out):
                continue
            copies = {dst + k[len(src):]: v for k, v in out.items() if k.startswith(src)}
            if copies:
                logger.info("%s: %s initialised from %s (%d tensors)", source, dst.rstrip("."), src.rstrip("."),
                            len(copies))
                out.update(copies)
    return out


def place_backbone_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ImageNet backbone weights arrive in the C4 detector's names (stem..res4 under ``backbone.``, res5 under
    ``roi_heads.``); a backbone that keeps them elsewhere says where (``imagenet_key_map``: prefix -> prefix,
    the first that matches wins; an FPN keeps the whole ResNet under ``backbone.bottom_up.``)."""
    key_map = getattr(getattr(model, "backbone", None), "imagenet_key_map", None)
    if not key_map:
        return state_dict
    moved = {}
    for key, value in state_dict.items():
        prefix = next((p for p in key_map if key.startswith(p)), None)
        moved[key if prefix is None else key_map[prefix] + key[len(prefix):]] = value
    return moved


def untrained_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes a backbone-only (ImageNet) file cannot fill, as the modules declare them:
    a module whose class sets ``starts_untrained`` (the RPN, the box head and predictor) and the children a
    module names in ``untrained_children`` (the FPN's own convolutions)."""
    out = []
    for name, module in model.named_modules():
        base = f"{name}." if name else ""
        if getattr(type(module), "starts_untrained", False):
            out.append(base)
        out.extend(base + child for child in getattr(module, "untrained_children", ()))
    return tuple(out)


def class_specific_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes of the modules sized by the class count (a class declares ``class_specific``)."""
    return tuple(f"{name}." for name, module in model.named_modules() if getattr(type(module), "class_specific", False))


def class_change(model: nn.Module, weights: Weights, class_names: Sequence[str] | None = None
                 ) -> tuple[str, str, tuple[str, ...]] | None:
    """(the file's classes, the run's, the class-specific prefixes), each said in words, when the file's
    class-specific layers are for other classes: sized for another number of them, or (both named) for
    other names or another order. None when they fit (or the file has none)."""
    prefixes = class_specific_prefixes(model)
    own = model.state_dict()
    for key, value in weights.state_dict.items():
        if key.startswith(prefixes) and key.endswith("cls_score.weight") and key in own:
            if value.shape[0] != own[key].shape[0]:  # K + 1 logits: background last
                return f"{value.shape[0] - 1} classes", f"{own[key].shape[0] - 1} classes", prefixes
            if weights.class_names and class_names and list(weights.class_names) != list(class_names):
                return f"classes {named(weights.class_names)}", f"classes {named(class_names)}", prefixes
    return None


def named(names: Sequence[str], most: int = 6) -> str:
    """``a, b, c`` (the first ``most`` and a count beyond them)."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


def load_weights_into(model: nn.Module, weights: Weights, *, strict: bool = True, source: str = "weights",
                      class_names: Sequence[str] | None = None):
    """Load ``weights``; a file trained for other classes (another count, or other ``class_names``) needs
    ``strict=False`` (fine-tuning), and then its class-specific layers are left at their initialisation, said
    in one line."""
    check_conventions(model, weights, source)
    state = weights.state_dict
    expected_missing: tuple[str, ...] = ()
    if weights.backbone_only:  # the detector's own layers start from their initialisation
        state = place_backbone_weights(model, state)
        expected_missing = untrained_prefixes(model)
    change = class_change(model, weights, class_names)
    reinitialised: tuple[str, ...] = ()
    if change is not None:
        had, has, prefixes = change
        layers = ", ".join(sorted({k.rsplit(".", 1)[0] for k in model.state_dict() if k.startswith(prefixes)}))
        if strict:
            raise WeightsMismatchError(f"{source} was trained for {had} and this run has {has}: to fine-tune "
                                       f"on these classes pass strict_weights=false, which starts {layers} afresh")
        logger.info("fine-tuning %s, trained for %s, on %s: %s start afresh, every other layer is loaded",
                    source, had, has, layers)
        reinitialised = prefixes
    return load_state_dict_checked(model, with_aliases(model, state, source), strict=strict,
                                   source=source, expected_missing=expected_missing, reinitialised=reinitialised)


def load_model_weights(model: nn.Module, path: str, *, strict: bool = True, format: str | None = None):
    """Load ``path`` (any supported format) into ``model``; returns the per-key report."""
    return load_weights_into(model, read_weights(path, format), strict=strict, source=path)

