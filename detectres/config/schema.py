"""The schema: what every node of a config may hold, and the one error a bad value raises.

- a node with a ``_target_`` is a :class:`Node`, checked against its constructor's signature (a
  :class:`ModelNode` may carry ``weights`` beside it);
- every other node has a dataclass here (:class:`Runtime`, :class:`Input`, :class:`Data`,
  :class:`Solver`) or in the tools' schemas (``detectres/apps/schemas.py``), typed with the constraint
  vocabulary of :mod:`detectres.config.constraints`, with an optional ``cross_check`` for rules that
  involve several keys.

:mod:`detectres.config.validation` walks a config against these; :mod:`detectres.config.hints` says in
words what a type hint allows. A bad value raises :class:`ConfigError` with one line naming the key, the
value and what is allowed: ``solver.max_iter=-1: must be an integer >= 1``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from detectres.config.constraints import (
    Fraction, ImageSide, MaxLength, NonNegativeFloat, NonNegativeInt, Pattern, PositiveFloat, PositiveInt, Range, Sizes, ClassNames,
)
from detectres.utils.resize import INTERPOLATIONS

if TYPE_CHECKING:
    from omegaconf import DictConfig


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


Device = Annotated[str, Pattern(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N, mps")]


@dataclass
class Runtime:
    output_dir: str | None
    device: Device
    num_threads: Annotated[int, Range(1, 4096)] | None
    amp: bool | Literal["bf16", "fp16"]
    deterministic: bool
    dist_timeout_s: PositiveFloat
    loggers: Annotated[list[Literal["tensorboard", "mlflow", "wandb"]], MaxLength(3)]

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
class Ema:
    decay: Annotated[float, Range(0, 1, hi_open=True)]
    tau: PositiveFloat


@dataclass
class Solver:
    ims_per_batch: Annotated[int, Range(1, 4096)]
    max_iter: PositiveInt | None
    epochs: PositiveInt | None
    accumulate: Annotated[int, Range(1, 4096)]
    optimizer: Node
    lr_scheduler: Node
    ema: Ema
    clip_grad_norm: NonNegativeFloat
    max_nonfinite_steps: NonNegativeInt
    checkpoint_period: NonNegativeInt
    eval_period: NonNegativeInt
    best_metric: Literal["bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl"] | None
    patience: NonNegativeInt

    @staticmethod
    def cross_check(node: DictConfig, path: str) -> None:
        if (node.max_iter is None) == (node.epochs is None):
            given = "both are set" if node.max_iter is not None else "neither is set"
            raise ConfigError(f"{path}.max_iter={node.max_iter}, {path}.epochs={node.epochs}: set exactly one "
                              f"(the run's length in steps or in epochs); {given}")
        if node.ims_per_batch % node.accumulate:
            raise ConfigError(f"{path}.accumulate={node.accumulate}: must divide {path}.ims_per_batch="
                              f"{node.ims_per_batch} (each step adds up that many micro-batches of equal size)")
        if node.patience and not node.eval_period:
            raise ConfigError(f"{path}.patience={node.patience}: early stopping counts evaluations, so it needs "
                              f"periodic evaluation ({path}.eval_period=N)")
