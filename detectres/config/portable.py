"""Portable paths in a stored config, as typed joins instead of interpolations.

A checkpoint stores literal values. Where a value depends on the machine or on another key, the stored
config also has ``joins``: ``{place: {"base": BASE, "suffix": "/rest"}}``, and the code computes the
value: ``cache``, ``datasets`` and ``package_data`` are folders (:mod:`detectres.config.paths`);
``data.root``, ``data.checks`` and ``data.class_names`` are the values of those keys (so
``data.root=/new`` on the command line still moves ``data.val.image_dir``). Each base is allowed only at
the places the shipped YAML uses it, and a suffix is a literal path tail with no ``$``.

The same recogniser (:func:`shipped_form`) reads the interpolations that configs stored before format 3
carried: exactly the forms the project's YAML wrote, at those places; nothing else is resolved.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Callable

from detectres.config.paths import cache_dir, datasets_dir, package_data_dir

DIR_BASES: dict[str, Callable[[], str]] = {"cache": cache_dir, "datasets": datasets_dir, "package_data": package_data_dir}
KEY_BASES = ("data.root", "data.checks", "data.class_names")
PATH_BASES = (*DIR_BASES, "data.root")  # bases that are strings and take a suffix; the others copy a node
# the places each base may fill
PLACES = {"cache": r"data\.root", "datasets": r"data\.root", "package_data": r"data\.root",
          "data.root": r"data\.(train|val|generate)\.(image_dir|ann_file|root)",
          "data.checks": r"data\.(train|val)\.checks", "data.class_names": r"data\.(train|val)\.class_names"}
SUFFIX = re.compile(r"(/[^$]*)?")  # nothing, or a path tail without '$'
MAX_JOINS = 64
# the interpolations the shipped YAML wrote (configs/data/*.yaml, then and now) -> base
SHIPPED = {
    "${oc.env:DETECTRES_CACHE,${oc.env:HOME}/.cache/detectres}": "cache",
    "${oc.env:DETECTRES_DATASETS,datasets}": "datasets",
    "${detectres_data:}": "package_data",
    "${detectres_root:}/tests/data": "package_data",
    "${data.root}": "data.root",
    "${data.checks}": "data.checks",
    "${data.class_names}": "data.class_names",
}


def shipped_form(text: str, place: str) -> dict | None:
    """The join for ``text`` at ``place`` if it is one of the shipped interpolations, else None."""
    for prefix, base in SHIPPED.items():
        if text.startswith(prefix):
            suffix = text[len(prefix):]
            if base in PATH_BASES or not suffix:
                if SUFFIX.fullmatch(suffix) and re.fullmatch(PLACES[base], place):
                    return {"base": base, "suffix": suffix}
    return None


def walk(config: Any, path: str = ""):
    """(dotted place, parent container, key, value) for every entry of a tree, parents before children."""
    stack: list[tuple[str, Any]] = [(path, config)]
    while stack:
        where, node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, value in items:
            here = f"{where}.{key}" if where else str(key)
            yield here, node, key, value
            if isinstance(value, (dict, list)):
                stack.append((here, value))


def shipped_joins(data: Any) -> dict[str, dict]:
    """place -> join for every string of the (unresolved) ``data`` node that is a shipped interpolation."""
    if not isinstance(data, dict):
        return {}
    return {where: form for where, _, _, value in walk(data, "data")
            if isinstance(value, str) and (form := shipped_form(value, where)) is not None}


def legacy_joins(config: dict) -> dict[str, dict]:
    """A config stored before format 3: its shipped interpolations become joins (the values are left
    empty here and computed by :func:`apply_joins`); any other ``${`` stays, to be refused."""
    joins = shipped_joins(config.get("data"))
    access = PlainAccess(config)
    for place, join in joins.items():
        access.set(place, "" if join["base"] in PATH_BASES else None)
    return joins


def check_joins(joins: Any) -> None:
    """ValueError unless ``joins`` is a mapping of allowed places to well-formed joins."""
    if not isinstance(joins, dict) or len(joins) > MAX_JOINS:
        raise ValueError(f"must be a mapping of at most {MAX_JOINS} places")
    for place, join in joins.items():
        if not isinstance(join, dict) or set(join) != {"base", "suffix"}:
            raise ValueError(f"{place}: a join is {{base, suffix}}, got {join!r:.80}")
        base, suffix = join["base"], join["suffix"]
        if base not in PLACES:
            raise ValueError(f"{place}: unknown base {base!r:.40} (allowed: {', '.join(PLACES)})")
        if not (isinstance(place, str) and re.fullmatch(PLACES[base], place)):
            raise ValueError(f"{place!r:.80}: base {base} may only fill {PLACES[base]}")
        if not (isinstance(suffix, str) and SUFFIX.fullmatch(suffix)) or (base not in PATH_BASES and suffix):
            raise ValueError(f"{place}: suffix {suffix!r:.80} is not a literal path tail for base {base}")


class PlainAccess:
    """Dotted get/set on plain containers."""

    def __init__(self, config: dict):
        self.config = config

    def parent(self, place: str) -> tuple[dict, str]:
        *parents, last = place.split(".")
        node = self.config
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ValueError(f"{place}: its parent is not a mapping")
        return node, last

    def get(self, place: str) -> Any:
        node, last = self.parent(place)
        return node.get(last)

    def set(self, place: str, value: Any) -> None:
        node, last = self.parent(place)
        node[last] = value


def overridden(place: str, keys) -> bool:
    return any(place == k or place.startswith(k + ".") for k in keys)


def apply_joins(joins: dict[str, dict], access, skip=()) -> None:
    """Fill each joined place (not under a key in ``skip``, the command line's) with its computed value:
    folders first, then the keys that refer to ``data.*`` values."""
    for place, join in sorted(joins.items(), key=lambda kv: kv[1]["base"] in KEY_BASES):
        if overridden(place, skip):
            continue
        base, suffix = join["base"], join["suffix"]
        if base in DIR_BASES:
            value = DIR_BASES[base]() + suffix
        else:
            source = access.get(base)
            if suffix and not isinstance(source, str):
                raise ValueError(f"{place}: joins {base} + {suffix!r}, but {base} is {source!r:.60}")
            value = source + suffix if suffix else copy.deepcopy(source)
        access.set(place, value)
