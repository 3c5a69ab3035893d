"""A config read from a file (a checkpoint's) is data, never code.

Hydra's ``instantiate`` imports and calls whatever ``_target_`` names, so a checkpoint whose stored
config says ``_target_: os.system`` would run a command when the model is rebuilt. Before a stored
config is used, :func:`check_stored_config` walks all of it and refuses the file when:

- a ``_target_`` is not one of :data:`ALLOWED_TARGETS` (the constructors the project's own configs
  use) or of the names added with :func:`allow_targets`, or is not a literal string;
- a node carries another Hydra key (``_args_``, ``_recursive_``, ``_convert_``...), or a ``_partial_``
  that is not a literal bool;
- a string uses an interpolation resolver other than :data:`ALLOWED_RESOLVERS` (``oc.decode`` or
  ``oc.create`` could build a ``_target_`` node at resolve time, after any check).

Configs composed from the project's YAML and the user's own command line are the user's to trust and
are not checked.
"""
from __future__ import annotations

from typing import Any

from omegaconf import grammar_parser
from omegaconf.errors import GrammarParseError
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

ALLOWED_TARGETS: set[str] = {
    "detectres.modeling.detector.FasterRCNN",
    "detectres.modeling.backbones.resnet.ResNet",
    "detectres.modeling.rpn.RPN",
    "detectres.modeling.anchors.AnchorGenerator",
    "detectres.modeling.matcher.Matcher",
    "detectres.modeling.box_coder.BoxCoder",
    "detectres.modeling.poolers.RoIPooler",
    "detectres.modeling.roi_heads.res5_head.Res5ROIHeads",
    "detectres.modeling.tta.TestTimeDetector",
    "detectres.modeling.tta.BoxRefinement",
    "detectres.modeling.tta.MultiScaleTesting",
    "detectres.modeling.tta.ImageTTA",
    "detectres.data.datasets.coco.COCODataset",
    "detectres.data.datasets.voc.VOCDataset",
    "detectres.data.datasets.shapes.ensure_shapes_dataset",
    "detectres.evaluation.coco.COCOEvaluator",
    "detectres.evaluation.voc.VOCEvaluator",
    "detectres.engine.solver.build_optimizer",
    "detectres.engine.solver.WarmupMultiStepLR",
}
ALLOWED_RESOLVERS = frozenset({"oc.env", "detectres_root"})
HYDRA_KEYS = frozenset({"_target_", "_partial_"})


class UnsafeConfigError(ValueError):
    """A stored config asks for something that could run code; nothing was built."""


def allow_targets(*names: str) -> None:
    """Let stored configs name these classes too (your own backbone or dataset, say), as fully
    qualified ``module.Class`` strings."""
    ALLOWED_TARGETS.update(names)


def resolvers_in(text: str) -> list[str]:
    """The interpolation resolvers ``text`` calls (``${oc.env:X}`` -> ``["oc.env"]``)."""
    if "${" not in text:
        return []
    try:
        tree = grammar_parser.parse(text, parser_rule="configValue")
    except GrammarParseError:
        return ["<unparsable interpolation>"]
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            found.append(node.resolverName().getText())
        stack.extend(node.getChild(i) for i in range(node.getChildCount()) if hasattr(node.getChild(i), "getChildCount"))
    return found


def _problem(key: str, value: Any) -> str | None:
    """Why ``key: value`` (one entry of a stored mapping) is refused, or None."""
    if key == "_target_":
        if not isinstance(value, str) or "${" in value:
            return f"a _target_ must be a literal class name, got {value!r}"
        if value not in ALLOWED_TARGETS:
            return f"_target_ {value!r} is not a detectres class this toolkit builds"
    elif key == "_partial_":
        if not isinstance(value, bool):
            return f"_partial_ must be true or false, got {value!r}"
    elif key.startswith("_") and key.endswith("_") and len(key) > 2:
        return f"Hydra key {key} is not allowed in a stored config"
    if isinstance(value, str):
        bad = [r for r in resolvers_in(value) if r not in ALLOWED_RESOLVERS]
        if bad:
            return f"interpolation resolver {bad[0]!r} in {value!r} is not allowed (only {sorted(ALLOWED_RESOLVERS)})"
    return None


def check_stored_config(config: Any, source: str) -> None:
    """Raise :class:`UnsafeConfigError`, naming the key, if ``config`` (plain containers read from
    ``source``) could make ``instantiate`` import or call anything but a detectres constructor."""
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
            problem = _problem(str(key), value) if isinstance(node, dict) else (
                _problem("", value) if isinstance(value, str) else None)
            if problem:
                raise UnsafeConfigError(f"refusing {source}: its stored config sets {where}: {problem} "
                                        "(nothing was built; a stored config is data, not code)")
            if isinstance(value, (dict, list, tuple)):
                stack.append((where, value))
