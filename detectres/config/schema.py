"""One schema for every value a user can set, checked before any work starts.

Two kinds of node, one checker (:func:`validate`):

- a node with a ``_target_`` is checked against its constructor's signature: each key must be a
  parameter, and each value must fit the parameter's type hint, ranges included (the hints use the
  ``Annotated`` aliases below, e.g. ``nms_thresh: Fraction``). A dataclass target (the test-time
  add-ons) is also built, so its own cross-field rules run;
- every other node has a dataclass here (:class:`Runtime`, :class:`Input`, :class:`Data`,
  :class:`Solver`) or in the tools' schemas (``detectres/apps/schemas.py``), typed the same way, with
  an optional ``cross_check`` for rules that involve several keys.

A bad value raises :class:`ConfigError` with one line naming the key, the value and what is allowed:
``solver.max_iter=-1: must be an integer >= 1``.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import os
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from detectres.config.constraints import (  # noqa: F401  (the vocabulary, re-exported)
    MAX_IMAGE_SIDE, AnchorSize, AspectRatio, Blocks, Channels, ClassCount, ClassNames, Fraction, GridSize, ImageSide,
    Increasing, Length, MaxLength, NonEmpty, NonNegativeFloat, NonNegativeInt, Pattern, PerImage, PositiveFloat,
    PositiveInt, Range, SampleCap, Sizes, TopK,
)
from detectres.config.targets import TargetNotAllowed, resolve_target
from detectres.utils.resize import INTERPOLATIONS


class ConfigError(ValueError):
    """A config value a user set is not allowed; the message is one line naming the key."""


class Node:
    """A config node built by ``instantiate``: checked against its ``_target_``'s signature."""

    extra: dict[str, Any] = {}       # keys the node may carry besides the constructor's parameters
    nullable: tuple[str, ...] = ()   # parameters whose null the caller fills in


class ModelNode(Node):
    """The ``model`` node: ``weights`` is loaded after building, a null ``num_classes`` is counted."""

    extra = {"weights": Union[str, None]}
    nullable = ("num_classes",)


# -- the checker ----------------------------------------------------------------------------------------
NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "true/false values"),
         str: ("a string", "strings"), type(None): ("null", "nulls")}
UNSET = object()  # a ??? value the tool leaves unset (see ``missing_ok``)


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


MISSING = "???"


def is_missing(node, key) -> bool:
    """A ``???`` value: OmegaConf's mark in a DictConfig, the literal string in plain containers."""
    return OmegaConf.is_missing(node, key) if isinstance(node, DictConfig) else node[key] == MISSING


def resolved(node, key, path: str, missing_ok: tuple[str, ...]):
    """``node[key]`` (a DictConfig's with interpolations resolved; plain containers are read as they are);
    :data:`UNSET` for a ??? under ``missing_ok``; any other missing or broken value is a :class:`ConfigError`."""
    if is_missing(node, key):
        if path.startswith(missing_ok):
            return UNSET
        raise ConfigError(f"{path}: missing (???); give {path}=VALUE")
    if not isinstance(node, DictConfig):
        return node[key]
    try:
        value = node[key]
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
    except OmegaConfBaseException as e:
        reason = str(e.msg).splitlines()[0]
        raise ConfigError(f"{path}: cannot resolve {OmegaConf.to_container(node)[key]!r}: {reason}") from None


def is_node(value) -> bool:
    return isinstance(value, (DictConfig, dict))


def check_value(value, hint, path: str, missing_ok: tuple[str, ...] = (), trusted=None) -> None:
    """Raise :class:`ConfigError` unless ``value`` fits ``hint`` (recursing into nested nodes)."""
    options = options_of(hint)
    if value is UNSET or hint is Any:
        if is_node(value) and "_target_" in value:
            validate(value, Node, path, missing_ok, trusted=trusted)
        return
    if value is None:
        if type(None) not in options:
            raise ConfigError(f"{path}=null: must be {describe(hint)}")
        return
    if is_node(value):
        nodes = [unwrap(o) for o in options if kind_of(o) == "node"]
        if nodes:
            schema = next((o for o in nodes if isinstance(o, type) and (issubclass(o, Node) or
                                                                        dataclasses.is_dataclass(o))), Node)
            validate(value, schema, path, missing_ok, trusted=trusted)
        elif not any(kind_of(o) == "mapping" for o in options):
            raise ConfigError(f"{path}: must be {describe(hint)}, not a config node")
        return
    if not fits(value, hint):
        raise ConfigError(f"{path}={value!r}: must be {describe(hint)}")


def target_hints(target, path: str, trusted=None) -> tuple[dict[str, Any], inspect.Signature, Any]:
    """The type hints and signature of the constructor ``target`` names; only an allowed target is imported
    (:func:`detectres.config.targets.resolve_target`)."""
    try:
        obj = resolve_target(target, path, trusted)
    except TargetNotAllowed as e:
        raise ConfigError(str(e)) from None
    try:
        hints, signature = accepted_parameters(obj)
        return hints, signature, obj
    except Exception as e:
        raise ConfigError(f"{path}._target_={target!r}: cannot read its signature ({e})") from None


def accepted_parameters(obj) -> tuple[dict[str, Any], inspect.Signature]:
    """The type hints and signature of what ``obj`` accepts. A class whose ``__init__`` passes ``**kwargs``
    on to its base is followed up the bases until one takes no ``**kwargs``, so every key the chain
    receives is checked against the constructor that declares it (the chain stays open, accepting any
    key, only if its last ``__init__`` takes ``**kwargs`` too)."""
    if not inspect.isclass(obj):
        return typing.get_type_hints(obj, include_extras=True), inspect.signature(obj)
    hints: dict[str, Any] = {}
    params: dict[str, inspect.Parameter] = {}
    for cls in obj.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        own = inspect.signature(cls.__init__).parameters
        for k, v in typing.get_type_hints(cls.__init__, include_extras=True).items():
            hints.setdefault(k, v)
        for name, p in own.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(name, p.replace(kind=p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in own.values()):
            break
    else:  # every constructor up the chain passes **kwargs on: any key is accepted
        params["kwargs"] = inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)
    return hints, inspect.Signature(sorted(params.values(), key=lambda p: p.kind))


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def check_arguments(obj, node, path: str) -> None:
    """The constructor's own rules across its arguments: a dataclass is built (``__post_init__``), a class
    with a ``check_args`` static method has it called with the node's values."""
    check = obj if dataclasses.is_dataclass(obj) else getattr(obj, "check_args", None)
    if check is None:
        return
    values = {k: v for k, v in plain(node).items() if not k.startswith("_")}
    try:
        check(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def validate_target(node, path: str, kind: type[Node] = Node, missing_ok: tuple[str, ...] = (), trusted=None) -> None:
    hints, signature, obj = target_hints(node["_target_"], path, trusted)
    hints = {**hints, **kind.extra, **{k: Union[hints.get(k, Any), None] for k in kind.nullable}}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    for key in node:
        where = f"{path}.{key}" if path else key
        if key == "_target_":
            continue
        if key == "_partial_":
            if not isinstance(resolved(node, key, where, ()), bool):
                raise ConfigError(f"{where}: must be true or false")
            continue
        if key.startswith("_") and key.endswith("_"):
            raise ConfigError(f"{where}: Hydra key {key} is not supported (only _target_ and _partial_)")
        if key not in signature.parameters and key not in kind.extra and not takes_kwargs:
            raise ConfigError(f"{where}: not a parameter of {node['_target_']} (it takes "
                              f"{', '.join(signature.parameters)})")
        check_value(resolved(node, key, where, missing_ok), hints.get(key, Any), where, missing_ok, trusted)
    if not any(is_missing(node, k) for k in node):
        check_arguments(obj, node, path)


def validate(node, schema, path: str = "", missing_ok: tuple[str, ...] = (), *, trusted=None) -> None:
    """Check ``node`` (a composed config or part of one, or the same as plain containers) against ``schema``
    (a dataclass, or :class:`Node` for a ``_target_`` node); ``missing_ok``: paths where a ??? may stay
    unset; ``trusted``: place -> ``_target_`` the caller vouches for. Raises :class:`ConfigError`."""
    if "_target_" in node:
        validate_target(node, path, schema if isinstance(schema, type) and issubclass(schema, Node) else Node,
                        missing_ok, trusted)
    elif dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema, include_extras=True)
        required = {f.name for f in dataclasses.fields(schema)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        for key in node:
            where = f"{path}.{key}" if path else key
            if key not in hints:
                raise ConfigError(f"{where}: unknown key (allowed here: {', '.join(hints)})")
            check_value(resolved(node, key, where, missing_ok), hints[key], where, missing_ok, trusted)
        absent = sorted(required - set(node))
        if absent:
            raise ConfigError(f"{path or 'the config'}: missing {', '.join(absent)}")
        cross_check = getattr(schema, "cross_check", None)
        if cross_check is not None:
            cross_check(node, path)
    else:
        raise ConfigError(f"{path}: must be a config node with a _target_")


def require_complete(node: DictConfig, path: str) -> None:
    """Raise :class:`ConfigError` for the first ??? left in ``node`` (a part a tool needs after all)."""
    for key in node:
        where = f"{path}.{key}"
        if OmegaConf.is_missing(node, key):
            raise ConfigError(f"{where}: missing (???); give {where}=VALUE")
        if isinstance(node[key], DictConfig):
            require_complete(node[key], where)


# -- the nodes that are not constructors ----------------------------------------------------------------
Device = Annotated[str, Pattern(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N, mps")]


@dataclass
class Runtime:
    output_dir: str | None
    device: Device
    num_threads: Annotated[int, Range(1, 4096)] | None
    amp: bool | Literal["bf16", "fp16"]
    deterministic: bool
    dist_timeout_s: PositiveFloat

    @staticmethod
    def cross_check(node: DictConfig, path: str) -> None:
        import torch

        cores = os.cpu_count() or 1
        if node.num_threads is not None and node.num_threads > cores:
            raise ConfigError(f"{path}.num_threads={node.num_threads}: this machine has {cores} CPU cores; more threads "
                              f"than cores only slow the run (null uses them all)")
        device = node.device
        if device == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"{path}.device=mps: Apple's MPS is not available on this machine; use "
                              f"{path}.device=cpu")
        if device.startswith("cuda"):
            index = int(device.split(":")[1]) if ":" in device else 0
            if not torch.cuda.is_available():
                raise ConfigError(f"{path}.device={device}: no CUDA GPU is available on this machine "
                                  f"(torch.cuda.is_available() is False); use {path}.device=cpu or auto")
            if index >= torch.cuda.device_count():
                raise ConfigError(f"{path}.device={device}: this machine has {torch.cuda.device_count()} GPU(s)")


@dataclass
class Input:
    min_size_train: Sizes
    max_size_train: ImageSide
    min_size_test: ImageSide
    max_size_test: ImageSide
    random_flip: Fraction
    interpolation: Literal[INTERPOLATIONS]  # type: ignore[valid-type]


@dataclass
class Data:
    train: Node
    val: Node
    evaluator: Node
    checks: dict
    num_workers: Annotated[int, Range(0, 256)]
    root: str | None = None
    generate: Node | None = None
    class_names: ClassNames | None = None


@dataclass
class Solver:
    ims_per_batch: Annotated[int, Range(1, 4096)]
    max_iter: PositiveInt
    optimizer: Node
    lr_scheduler: Node
    clip_grad_norm: NonNegativeFloat
    max_nonfinite_steps: NonNegativeInt
    checkpoint_period: NonNegativeInt
    eval_period: NonNegativeInt

    @staticmethod
    def cross_check(node: DictConfig, path: str) -> None:
        steps = list(node.lr_scheduler.steps) if "steps" in node.lr_scheduler else []
        late = [s for s in steps if s >= node.max_iter]
        if late:
            raise ConfigError(f"{path}.lr_scheduler.steps={steps}: every step must be below "
                              f"{path}.max_iter={node.max_iter}")
