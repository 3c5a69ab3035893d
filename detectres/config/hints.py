"""What a type hint allows, in words (``a non-empty list of integers >= 1``) and as a test on a plain
value: the vocabulary the config checker (:mod:`detectres.config.validation`) reads constructor
signatures and schema dataclasses with. Pure functions; no OmegaConf.
"""
from __future__ import annotations

import collections.abc
import math
import types
import typing
from typing import Annotated, Any, Literal, Union

from detectres.config.constraints import Increasing, Length, MaxLength, NonEmpty, Pattern
from detectres.config.schema import Node

NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "true/false values"),
         str: ("a string", "strings"), type(None): ("null", "nulls")}


def unwrap(hint):
    """``Annotated[X, ...]`` -> ``X``."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def options_of(hint) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)


def kind_of(option) -> str:
    """"value" (what a user types: numbers, strings, lists, choices), "mapping" (a free-form dict) or
    "node" (a config node that becomes an object)."""
    base = unwrap(option)
    origin = typing.get_origin(base)
    if base in NOUNS or base is Any or origin in (Literal, list, tuple):
        return "value"
    if base is dict or origin is dict or base is typing.Mapping or origin is collections.abc.Mapping:
        return "mapping"
    return "node"


def describe_list(items, constraints) -> str:
    """``a non-empty list of integers >= 1``, ``an increasing list of ...``, ``a list of 4 numbers > 0``."""
    elements = describe(typing.get_args(items)[0], plural=True) if typing.get_args(items) else "values"
    count = [str(c) for c in constraints if isinstance(c, (Length, MaxLength))]
    adjectives = " ".join(str(c) for c in constraints if isinstance(c, (NonEmpty, Increasing)))
    head = f"{adjectives} list" if adjectives else "list"
    return f"{'an' if head[0] in 'aeiou' else 'a'} {head} of {' '.join([*count, elements])}"


def describe(hint, plural: bool = False) -> str:
    """What ``hint`` allows, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        base, constraints = args[0], args[1:]
        if typing.get_origin(base) in (list, tuple):
            return describe_list(base, constraints)
        pattern = next((c for c in constraints if isinstance(c, Pattern)), None)
        if pattern is not None:
            return f"one of {pattern}"
        return " ".join([describe(base, plural), *(str(c) for c in constraints if not isinstance(c, (NonEmpty, MaxLength)))])
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a, plural) for a in args)
    if origin is Literal:
        choices = ", ".join("null" if a is None else str(a).lower() if isinstance(a, bool) else str(a) for a in args)
        return f"values among {choices}" if plural else f"one of {choices}"
    if origin in (list, tuple):
        return describe_list(hint, ())
    if hint in NOUNS:
        return NOUNS[hint][plural]
    if kind_of(hint) == "mapping":
        return "a mapping"
    made = args[-1] if origin is collections.abc.Callable and args else hint
    return "a config node" if made is Node or made is Any else f"a {getattr(made, '__name__', made)} config node"


def fits(value, hint) -> bool:
    """Does ``value`` (plain Python, already resolved, not a node) fit ``hint``?"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return fits(value, args[0]) and all(c.ok(value) for c in args[1:] if hasattr(c, "ok"))
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(fits(v, args[0]) for v in value))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    return hint is Any  # a node or a mapping is never a plain value
