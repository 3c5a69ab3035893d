"""A config read from a file (a checkpoint's) is data, never code.

Hydra's ``instantiate`` imports and calls whatever ``_target_`` names, so a checkpoint whose stored
config says ``_target_: os.system`` would run a command when the model is rebuilt. Before a stored
config is used, :func:`check_stored_config` walks all of it and refuses the file when:

- a ``_target_`` is not a literal string, or is none of: the constructors the project's own configs
  use (:data:`ALLOWED_TARGETS`, plus names added with :func:`allow_targets`); a target that writes
  files, at the one place it belongs (:data:`PLACED_TARGETS`: the shapes generator at
  ``data.generate``); the target the caller's own config has at the same place (``trusted``);
- a node carries another Hydra key (``_args_``, ``_recursive_``, ``_convert_``...), or a ``_partial_``
  that is not a literal bool;
- a string uses an interpolation resolver other than :data:`ALLOWED_RESOLVERS` (``oc.decode`` or
  ``oc.create`` could build a ``_target_`` node at resolve time, after any check), or ``oc.env`` on a
  variable other than detectres' own (a path could carry a secret into logs).

Configs composed from the project's YAML and the user's own command line are the user's to trust and
are not checked; :func:`checkpoint_config` resolves, before saving, any interpolation of theirs that a
later check would refuse.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf, grammar_parser
from omegaconf.errors import GrammarParseError
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

ALLOWED_TARGETS: set[str] = {
    "detectres.modeling.detector.FasterRCNN",
    "detectres.modeling.backbones.resnet.ResNet",
    "detectres.modeling.backbones.fpn.FPN",
    "detectres.modeling.rpn.RPN",
    "detectres.modeling.anchors.AnchorGenerator",
    "detectres.modeling.matcher.Matcher",
    "detectres.modeling.box_coder.BoxCoder",
    "detectres.modeling.poolers.RoIPooler",
    "detectres.modeling.poolers.MultiLevelRoIPooler",
    "detectres.modeling.roi_heads.res5_head.Res5ROIHeads",
    "detectres.modeling.roi_heads.fpn_head.FPNROIHeads",
    "detectres.modeling.roi_heads.fpn_head.FCHead",
    "detectres.modeling.tta.TestTimeDetector",
    "detectres.modeling.tta.BoxRefinement",
    "detectres.modeling.tta.MultiScaleTesting",
    "detectres.modeling.tta.ImageTTA",
    "detectres.data.datasets.coco.COCODataset",
    "detectres.data.datasets.voc.VOCDataset",
    "detectres.evaluation.coco.COCOEvaluator",
    "detectres.evaluation.voc.VOCEvaluator",
    "detectres.engine.solver.build_optimizer",
    "detectres.engine.solver.WarmupMultiStepLR",
}
# Targets that write files: allowed only at the place the project's configs put them.
PLACED_TARGETS = {"detectres.data.datasets.shapes.ensure_shapes_dataset": "data.generate"}
ALLOWED_RESOLVERS = frozenset({"oc.env", "detectres_root", "detectres_data"})
ENV_VARIABLES = re.compile(r"DETECTRES_\w+|HOME")  # what oc.env may read in a stored config


class UnsafeConfigError(ValueError):
    """A stored config asks for something that could run code; nothing was built."""


def allow_targets(*names: str) -> None:
    """Let stored configs name these classes too (your own backbone or dataset, say), as fully
    qualified ``module.Class`` strings."""
    ALLOWED_TARGETS.update(names)


def resolver_calls(text: str) -> list[tuple[str, str]]:
    """(resolver, its first argument) for every resolver ``text`` calls: ``${oc.env:X}`` -> ``[("oc.env", "X")]``."""
    if "${" not in text:
        return []
    try:
        tree = grammar_parser.parse(text, parser_rule="configValue")
    except GrammarParseError:
        return [("<unparsable interpolation>", "")]
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            args = node.sequence()
            found.append((node.resolverName().getText(), args.element(0).getText() if args else ""))
        children = (node.getChild(i) for i in range(node.getChildCount()))
        stack.extend(c for c in children if hasattr(c, "getChildCount"))
    return found


def interpolation_problem(text: str) -> str | None:
    """Why a string's interpolations are refused in a stored config, or None."""
    for resolver, arg in resolver_calls(text):
        if resolver not in ALLOWED_RESOLVERS:
            return f"interpolation resolver {resolver!r} in {text!r} is not allowed (only {sorted(ALLOWED_RESOLVERS)})"
        if resolver == "oc.env" and not ENV_VARIABLES.fullmatch(arg):
            return f"oc.env may read DETECTRES_* and HOME only, not {arg!r} (in {text!r})"
    return None


def targets_in(config: Any, path: str = "") -> dict[str, str]:
    """Place -> ``_target_`` for every node of a (trusted) config, a DictConfig or plain containers."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=False)
    found = {}
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        if key == "_target_" and isinstance(value, str):
            found[path] = value
        elif isinstance(value, (dict, list)):
            found.update(targets_in(value, f"{path}.{key}" if path else str(key)))
    return found


def target_allowed(target: str, place: str, trusted: Mapping[str, str]) -> bool:
    return target in ALLOWED_TARGETS or PLACED_TARGETS.get(target) == place or trusted.get(place) == target


def _problem(key: str, value: Any, place: str, trusted: Mapping[str, str]) -> str | None:
    """Why ``key: value`` (one entry of the stored mapping at ``place``) is refused, or None."""
    if key == "_target_":
        if not isinstance(value, str) or "${" in value:
            return f"a _target_ must be a literal class name, got {value!r}"
        if not target_allowed(value, place, trusted):
            return f"_target_ {value!r} is not a detectres class this toolkit builds there"
    elif key == "_partial_":
        if not isinstance(value, bool):
            return f"_partial_ must be true or false, got {value!r}"
    elif key.startswith("_") and key.endswith("_") and len(key) > 2:
        return f"Hydra key {key} is not allowed in a stored config"
    return interpolation_problem(value) if isinstance(value, str) else None


def check_stored_config(config: Any, source: str, trusted: Mapping[str, str] | None = None) -> None:
    """Raise :class:`UnsafeConfigError`, naming the key, if ``config`` (plain containers read from
    ``source``) could make ``instantiate`` import or call anything but a detectres constructor.
    ``trusted``: place -> ``_target_`` of the caller's own config (see :func:`targets_in`), whose
    targets a stored config may name at the same places (your own classes, from your command line)."""
    trusted = trusted or {}
    if not isinstance(config, dict):
        raise UnsafeConfigError(f"refusing {source}: its stored config is a {type(config).__name__}, not a mapping")
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        path, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
        for key, value in items:
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, (str, int)):
                raise UnsafeConfigError(f"refusing {source}: its stored config has a non-string key {key!r} at {path}")
            problem = (_problem(str(key), value, path, trusted) if isinstance(node, dict)
                       else interpolation_problem(value) if isinstance(value, str) else None)
            if problem:
                raise UnsafeConfigError(f"refusing {source}: its stored config sets {where}: {problem} "
                                        "(nothing was built; a stored config is data, not code)")
            if isinstance(value, (dict, list, tuple)):
                stack.append((where, value))
