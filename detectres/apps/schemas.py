"""The schema of each tool's top-level config. Its nodes have theirs in :mod:`detectres.config.schema`
(``runtime``, ``input``, ``data``, ``solver``) and in the constructors' signatures (every ``_target_``
node); :func:`validate_tool_config` checks all of it before the tool does any work."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf

from detectres.utils.tracking import missing_tracker
from detectres.config.constraints import Fraction, NonEmpty, NonNegativeInt, PositiveInt, Range
from detectres.config.schema import ConfigError, Data, Input, ModelNode, Node, Runtime, Solver
from detectres.config.validation import require_complete, validate
from detectres.data.checks import SCAN_LEVELS, resolve_policies, scan_level
from detectres.utils.comm import env_world_size


def check_data_policies(data: DictConfig, path: str) -> None:
    """``data.checks``: known problem kinds, each with a policy it allows, and a known scan level."""
    checks = OmegaConf.to_container(data.checks, resolve=True)
    scan = checks.pop("scan", "exists")
    try:
        scan_level(scan, resolve_policies(checks))
    except (KeyError, ValueError) as e:
        raise ConfigError(str(e.args[0]).replace("data.checks", f"{path}.checks")) from None


class ChecksData:
    """A tool that loads the validation data: its ``data.checks`` policies are checked, and ``data.val``
    must be complete unless a ``checkpoint`` brings its own (``data.train`` may stay unset: ``missing_ok``)."""

    missing_ok = ("data.train", "data.val")

    @staticmethod
    def cross_check(node: DictConfig, path: str) -> None:
        check_data_policies(node.data, "data")
        if not node.get("checkpoint"):  # a checkpoint's stored data (data=custom's paths) replaces this node
            require_complete(node.data.val, "data.val")


@dataclass
class Augment:
    """``augment``: albumentations transforms by name with their arguments, built here so an unknown transform
    or argument is refused before any work (:func:`detectres.data.transforms.build_augment`)."""

    steps: Annotated[list[Any], NonEmpty()]  # each a mapping: checked by cross_check
    min_visibility: Fraction
    min_size: Annotated[float, Range(0, 10000)]

    @staticmethod
    def cross_check(node: DictConfig, path: str) -> None:
        from detectres.data.transforms import AugmentError, build_augment

        try:
            build_augment(OmegaConf.to_container(node.steps, resolve=True), min_visibility=node.min_visibility,
                          min_size=node.min_size, where=f"{path}.steps")
        except AugmentError as e:
            raise ConfigError(str(e)) from None


@dataclass
class EvalSettings:
    """What every evaluation reports beyond AP: the confusion matrix counts detections scoring ``conf_thresh``
    or more."""

    conf_thresh: Fraction


@dataclass
class TrainConfig:
    input: Input
    model: ModelNode
    data: Data
    solver: Solver
    runtime: Runtime
    resume: bool
    overwrite: bool
    allow_resume_changes: bool
    seed: int
    strict_weights: bool
    sync_bn: bool
    log_period: PositiveInt
    vis_images: NonNegativeInt
    eval: EvalSettings
    augment: Augment

    @staticmethod
    def cross_check(node: DictConfig, path: str) -> None:
        check_data_policies(node.data, "data")
        if node.runtime.output_dir is None:
            raise ConfigError("runtime.output_dir=null: training needs a folder to write its checkpoints into")
        world = env_world_size()
        missing = missing_tracker(list(node.runtime.loggers))
        if missing:
            raise ConfigError(missing)
        parts = world * node.solver.accumulate
        if node.solver.ims_per_batch % parts:
            raise ConfigError(f"solver.ims_per_batch={node.solver.ims_per_batch}: the total over all processes must "
                              f"be divisible by their number, {world}, times solver.accumulate={node.solver.accumulate}")


@dataclass
class RestoresModel:
    """A tool that restores a model: a checkpoint's recipe, or the model config plus ``model.weights``."""

    input: Input
    model: ModelNode
    data: Data
    runtime: Runtime
    checkpoint: str | None


@dataclass
class EvalConfig(RestoresModel, ChecksData):
    test: Node
    ensemble: list[str]
    vis_images: NonNegativeInt
    eval: EvalSettings


@dataclass
class PredictConfig(RestoresModel):
    missing_ok = ("data.train", "data.val")

    source: str | None
    score_thresh: Fraction
    max_images: NonNegativeInt
    save: Literal["json", "csv", "coco", "none"]
    draw: Annotated[int, Range(0, 10**9)] | Literal["all"]
    batch_size: Annotated[int, Range(1, 1024)]

    @staticmethod
    def cross_check(node: DictConfig, path: str) -> None:
        if node.source is None and not node.checkpoint:  # the default source: the validation images' folder
            require_complete(node.data.val, "data.val")


@dataclass
class DemoConfig(RestoresModel):
    missing_ok = ("data.train", "data.val")

    source: str | NonNegativeInt
    output: str | None
    display: bool | Literal["auto"]
    score_thresh: Fraction
    classes: Annotated[list[str], NonEmpty()] | None
    max_frames: NonNegativeInt
    queue_size: PositiveInt


@dataclass
class LargeInference:
    image: str
    min_size: PositiveInt
    max_size: PositiveInt
    proposals: PositiveInt
    rounds: NonNegativeInt


@dataclass
class FPNBenchmark:
    image: str
    min_size: PositiveInt
    max_size: PositiveInt
    c4_proposals: PositiveInt
    rounds: NonNegativeInt


@dataclass
class BenchmarkConfig:
    runtime: Runtime
    image: str
    ann_file: str
    min_size: PositiveInt
    max_size: PositiveInt
    rounds: PositiveInt
    warmup: NonNegativeInt
    large: LargeInference
    fpn: FPNBenchmark


@dataclass
class TrainBenchmarkConfig:
    input: Input
    model: ModelNode
    runtime: Runtime
    image: str
    ann_file: str
    min_size: PositiveInt
    max_size: PositiveInt
    batch: PositiveInt
    modes: Annotated[list[Literal["fp32", "bf16", "fp16"]], NonEmpty()]
    iters: PositiveInt
    warmup: NonNegativeInt


@dataclass
class CheckDataConfig:
    missing_ok = ("data.train", "data.val")

    data: Data
    input: Input
    runtime: Runtime
    splits: Annotated[list[Literal["train", "val"]], NonEmpty()]
    scan: Literal[SCAN_LEVELS]  # type: ignore[valid-type]
    show: Annotated[int, Range(-1)]
    output: str | None
    draw: Annotated[int, Range(0, 10000)]
    augment: Augment

    @staticmethod
    def cross_check(node: DictConfig, path: str) -> None:
        check_data_policies(node.data, "data")
        for split in node.splits:
            require_complete(node.data[split], f"data.{split}")


@dataclass
class AblationConfig:
    runtime: Runtime
    checkpoint: str
    context_checkpoint: str
    overrides: list[str]


SCHEMAS = {"train": TrainConfig, "eval": EvalConfig, "predict": PredictConfig, "demo": DemoConfig,
           "benchmark": BenchmarkConfig, "train_benchmark": TrainBenchmarkConfig, "check_data": CheckDataConfig,
           "ablation": AblationConfig}


def validate_tool_config(config_name: str, cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line naming the key) unless ``cfg`` fits the tool's schema."""
    schema = SCHEMAS[config_name]
    validate(cfg, schema, missing_ok=getattr(schema, "missing_ok", ()))
