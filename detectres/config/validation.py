"""The config checker: :func:`validate` walks a node (a composed config, part of one, or the same as
plain containers) against its schema (:mod:`detectres.config.schema`): a ``_target_`` node against its
constructor's signature (each key a parameter, followed through ``**kwargs`` to the constructor that
declares it; each value fitting the parameter's hint, ranges included; a dataclass target is also built
so its own cross-field rules run), every other node against its dataclass. A bad value raises
:class:`~detectres.config.schema.ConfigError` with one line naming the key.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from detectres.config.hints import describe, fits, kind_of, options_of, unwrap
from detectres.config.schema import ConfigError, Node
from detectres.config.targets import TargetNotAllowed, resolve_target

UNSET = object()  # a ??? value the tool leaves unset (see ``missing_ok``)



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
