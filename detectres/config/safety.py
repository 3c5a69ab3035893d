"""A config read from a file (a checkpoint's) is data by construction.

:func:`read_stored_config` is the only way a stored config enters detectres. It never hands the text
to OmegaConf or Hydra; it reads the plain containers ``torch.load(weights_only=True)`` returned, and:

1. **bounds** them before anything else walks them: at most :data:`MAX_NODES` nodes, :data:`MAX_DEPTH`
   levels, :data:`MAX_STRING` characters a string and :data:`MAX_TEXT` in all; a container reached
   twice (shared references, "billion laughs") is refused, so no file can multiply the work;
2. **keeps literals literal**: every value is a string, number, boolean, null, list or mapping, and no
   string (key or value) contains ``${``, escaped or not. Checkpoints written before config format 3
   stored the project's own interpolations; exactly the forms the shipped YAML wrote
   (:func:`detectres.config.portable.shipped_form`) are recognised, at the places it wrote them, and
   replaced by values computed in code, never by resolving the stored text;
3. **names only declared constructors**: each ``_target_`` is one :mod:`detectres.config.targets`
   allows at that place; ``_partial_`` is a literal bool; no other Hydra key.

What passes is built by the restricted builder (:mod:`detectres.config.builder`), which checks the same
containers against the schema and builds exactly them. A refusal is one :class:`UnsafeConfigError` line
naming the file, the key and the rule.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Mapping

from detectres.config import portable
from detectres.config.targets import target_allowed

# Limits, measured against the largest configs the project composes (train with model=quickstart_fpn or
# r101_fpn, data=voc0712, solver=coco_3x: at most 334 nodes, depth 6, 4.0k characters; a 1,203-class
# LVIS list of class names would add 1.2k nodes) and set with a wide margin.
MAX_NODES = 20_000
MAX_DEPTH = 32
MAX_STRING = 4096          # a path is at most 4096 bytes on Linux
MAX_TEXT = 1_000_000       # characters in all strings together
MAX_CLASS_NAMES = 100_000
CONFIG_FORMAT = 3          # bumped when the stored form changes; older forms are upgraded on read
LEAVES = (str, int, float, bool, type(None))
HYDRA_KEY = re.compile(r"_\w+_")
CHOICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # a config file's name, e.g. voc0712, r50_fpn


class UnsafeConfigError(ValueError):
    """A stored config that is not plain, bounded, literal data naming declared constructors; nothing
    was built and nothing in it was interpreted."""


def refuse(source: str, where: str, problem: str) -> UnsafeConfigError:
    at = f"sets {where}: " if where else ""
    return UnsafeConfigError(f"refusing {source}: its stored config {at}{problem} (nothing was built; a stored "
                             "config is data, not code)")


def check_bounds(config: Any, source: str) -> None:
    """Refuse ``config`` if it is not a tree of plain values within the limits; linear in its size."""
    if not isinstance(config, dict):
        raise refuse(source, "", f"is a {type(config).__name__}, not a mapping")
    seen: set[int] = set()
    nodes, text = 0, 0
    stack: list[tuple[str, Any, int]] = [("", config, 0)]
    while stack:
        where, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise refuse(source, where, f"nests deeper than {MAX_DEPTH} levels (limit MAX_DEPTH)")
        if id(node) in seen:
            raise refuse(source, where, "is a second reference to a node already read (shared references "
                         "could multiply the work; limit: every node once)")
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            nodes += 1
            if nodes > MAX_NODES:
                raise refuse(source, "", f"has more than {MAX_NODES} nodes (limit MAX_NODES)")
            if isinstance(node, dict) and not isinstance(key, str):
                raise refuse(source, where, f"a key of type {type(key).__name__} ({key!r:.40}); keys are strings")
            here = f"{where}.{key}" if where else str(key)
            for piece in (key, value) if isinstance(node, dict) else (value,):
                if isinstance(piece, str):
                    if len(piece) > MAX_STRING:
                        raise refuse(source, here, f"a string of {len(piece)} characters (limit MAX_STRING="
                                     f"{MAX_STRING})")
                    text += len(piece)
            if text > MAX_TEXT:
                raise refuse(source, "", f"holds more than {MAX_TEXT} characters of text (limit MAX_TEXT)")
            if isinstance(value, (dict, list)):
                stack.append((here, value, depth + 1))
            elif not isinstance(value, LEAVES):
                raise refuse(source, here, f"a {type(value).__name__}; only strings, numbers, booleans, null, "
                             "lists and mappings are allowed")


def check_entry(where: str, node: Any, key: Any, value: Any, trusted: Mapping[str, str] | None) -> str | None:
    """Why one entry of a bounded, legacy-free stored config is refused, or None."""
    if isinstance(key, str) and "${" in key:
        return f"a key with '${{' ({key!r}); a stored key is a literal"
    if isinstance(value, str) and "${" in value:
        return f"{value!r:.120}: a stored value is a literal and may not contain '${{' (escaped or not)"
    if not isinstance(node, dict):
        return None
    place = where.rpartition(".")[0]
    if key == "_target_":
        if not target_allowed(value, place, trusted):
            return f"_target_ {value!r} is not a detectres class this toolkit builds there"
    elif key == "_partial_":
        if not isinstance(value, bool):
            return f"_partial_ must be true or false, got {value!r}"
    elif HYDRA_KEY.fullmatch(key):
        return f"Hydra key {key} is not allowed in a stored config"
    return None


def read_stored_config(config: Any, source: str, trusted: Mapping[str, str] | None = None) -> dict:
    """The stored config ``config`` (plain containers read from ``source``) as checked, literal plain
    containers in today's form, with ``joins`` (see :mod:`detectres.config.portable`) applied and kept;
    :class:`UnsafeConfigError` otherwise. ``trusted``: place -> ``_target_`` of the caller's own config,
    which the stored config may name at the same place. ``config`` itself is left as read."""
    check_bounds(config, source)
    config = copy.deepcopy(config)  # bounded, tree-shaped: cheap
    fmt = config.get("config_format", 1)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= CONFIG_FORMAT:
        raise refuse(source, "config_format", f"{fmt!r}; this detectres reads formats 1 to {CONFIG_FORMAT}")
    joins = config.pop("joins", {}) if fmt >= 3 else portable.legacy_joins(config)
    choices = config.pop("choices", {})
    if not (isinstance(choices, dict) and set(choices) <= {"model", "input", "data"}
            and all(isinstance(v, str) and CHOICE.fullmatch(v) for v in choices.values())):
        raise refuse(source, "choices", f"{choices!r:.80}: a mapping of model/input/data to config names")
    try:
        portable.check_joins(joins)
    except ValueError as e:
        raise refuse(source, "joins", str(e)) from None
    for where, node, key, value in portable.walk(config):
        problem = check_entry(where, node, key, value, trusted)
        if problem:
            raise refuse(source, where, problem)
    if fmt < 2:
        upgrade_format_1(config)
    try:
        portable.apply_joins(joins, portable.PlainAccess(config))
    except ValueError as e:
        raise refuse(source, "joins", str(e)) from None
    config["joins"], config["choices"], config["config_format"] = joins, choices, CONFIG_FORMAT
    return config


# Recipe keys the oldest checkpoints lack, with the value their code assumed.
RECIPE_DEFAULTS = {
    "input": {"interpolation": "bilinear"},
    "data": {"class_names": None, "generate": None, "checks": {},
             "evaluator": {"_target_": "detectres.evaluation.coco.COCOEvaluator", "_partial_": True}},
}


def upgrade_format_1(config: dict) -> None:
    """Format 1 wrote the anchor stride and the RoI pooler's spatial scale (today the backbone supplies
    them), and the oldest configs lack keys whose defaults lived in code (:data:`RECIPE_DEFAULTS`)."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    for parent, child, key in (("rpn", "anchor_generator", "stride"), ("roi_heads", "pooler", "spatial_scale")):
        node = (model.get(parent) or {}).get(child)
        if isinstance(node, dict):
            node.pop(key, None)
            node["_partial_"] = True
    for name, defaults in RECIPE_DEFAULTS.items():
        if isinstance(config.get(name), dict):
            for key, value in defaults.items():
                config[name].setdefault(key, copy.deepcopy(value))


def check_stored_config(config: Any, source: str, trusted: Mapping[str, str] | None = None) -> None:
    """Raise :class:`UnsafeConfigError`, naming the key, unless ``config`` reads as a stored config."""
    read_stored_config(config, source, trusted)


def check_class_names(names: Any, source: str) -> list[str] | None:
    """A checkpoint's class names: null, or a bounded list of strings."""
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and len(n) <= MAX_STRING for n in names):
        raise UnsafeConfigError(f"refusing {source}: class_names must be a list of strings, got {names!r:.80}")
    if not 0 < len(names) <= MAX_CLASS_NAMES:
        raise UnsafeConfigError(f"refusing {source}: {len(names)} class names (limit 1 to {MAX_CLASS_NAMES})")
    return list(names)
