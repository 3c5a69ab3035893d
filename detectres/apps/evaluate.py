"""The evaluation application (``tools/test_net.py``): a checkpoint, or a config plus weights, scored on
the validation split, with the test-time procedure ``test=baseline|refine|multiscale|tta|paper`` or an
ensemble. Under ``torchrun`` each rank evaluates its share and rank 0 scores and writes."""
from __future__ import annotations

import os

from omegaconf import DictConfig
from torch import nn

from detectres.config.builder import build
from detectres.data.build import build_dataset
from detectres.data.loader import build_test_loader
from detectres.evaluation.evaluator import build_evaluator, evaluate_detector
from detectres.evaluation.plots import write_evaluation_plots
from detectres.evaluation.report import draw_dataset_predictions, print_summary, write_eval_json
from detectres.modeling.ensemble import EnsembleDetector
from detectres.modeling.tta import TestTimeDetector
from detectres.utils.comm import get_rank, get_world_size, init_distributed, is_main_process, shutdown_distributed
from detectres.utils.env import set_threads
from detectres.utils.events import tensorboard_writer, tensorboard_writes
from detectres.utils.run_lock import RankZeroLock
from detectres.weights.restore import (
    RestoredModel, build_restored, checked_recipe, read_for, recipe_config, require_weights, restore_config,
)


ADD_ONS = ("refine", "multiscale", "tta")  # the test-time procedures; none of them: the plain detector


def evaluate(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Evaluate ``checkpoint=PATH`` (its stored config is the recipe) or ``model.weights=PATH`` (with
    the composed config); ``overrides`` are the command line's, carried onto a checkpoint's recipe."""
    init_distributed(cfg.runtime.dist_timeout_s, device=cfg.runtime.device)
    try:
        return evaluate_process(cfg, overrides)
    finally:
        shutdown_distributed()


def ensemble_member(composed: DictConfig, restored: RestoredModel, path: str) -> nn.Module:
    """Another checkpoint of the ensemble, restored as it was trained (its own stored recipe, no
    overrides); a file without a stored config takes the first model's recipe."""
    weights = read_for(composed, path)
    recipe = checked_recipe(recipe_config(composed, weights.config)) if weights.config else restored.config
    return build_restored(recipe, weights, path, class_names=restored.class_names).model


def test_time_model(composed: DictConfig, restored: RestoredModel) -> nn.Module:
    """The restored detector inside the configured test-time procedure, or an ensemble with the
    checkpoints ``ensemble`` lists."""
    cfg = restored.config
    if cfg.ensemble:
        if any(cfg.test[k] is not None for k in ADD_ONS):
            raise ValueError("ensemble= works with test=baseline only")
        return EnsembleDetector([restored.model, *(ensemble_member(composed, restored, p) for p in cfg.ensemble)])
    return build(cfg.test, "test")(model=restored.model, min_size=cfg.input.min_size_test,
                                 max_size=cfg.input.max_size_test, interpolation=cfg.input.interpolation)


def evaluate_process(composed: DictConfig, overrides) -> dict:
    require_weights(composed, "evaluate")
    cfg, weights, source = restore_config(composed, overrides, checkpoint=composed.checkpoint)
    # beside a checkpoint file; inside an export folder
    base = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    output_dir = cfg.runtime.output_dir or os.path.join(base, "eval")
    with RankZeroLock(output_dir):
        return evaluate_into(composed, cfg, weights, source, output_dir)


def evaluate_into(composed: DictConfig, cfg: DictConfig, weights, source: str, output_dir: str) -> dict:
    """Evaluate the restored recipe ``cfg`` with ``weights`` and write the results into ``output_dir``."""
    set_threads(cfg.runtime.num_threads, cfg.data.num_workers)
    # test-time procedures pick their own sizes from the original images; the plain detector and ensembles
    # take resized ones
    plain = not cfg.ensemble and all(cfg.test[k] is None for k in ADD_ONS)
    dataset = build_dataset(cfg, "val", resize=plain or bool(cfg.ensemble))
    records = dataset.records
    class_names = weights.class_names or records.class_names
    if list(class_names) != list(records.class_names):
        raise ValueError(f"{source} was trained on classes {class_names} but {records.name} "
                         f"lists {records.class_names}")
    restored = build_restored(cfg, weights, source, class_names=class_names)
    # test=baseline is the batched detector itself, as training evaluates it; a wrapper only for an add-on
    model = restored.model if plain else test_time_model(composed, restored)
    # a test-time procedure's resized copies are made in the loader's workers, not between model calls
    mapper = model.input_mapper() if isinstance(model, TestTimeDetector) else None
    loader = build_test_loader(dataset, num_workers=cfg.data.num_workers, rank=get_rank(), world_size=get_world_size(),
                               device=restored.model.device, mapper=mapper)
    results = evaluate_detector(model, loader, build_evaluator(cfg.data, records), output_dir,
                                autocast=cfg.runtime.amp, conf_thresh=cfg.eval.conf_thresh)
    if not is_main_process():
        return results
    write_eval_json(results, os.path.join(output_dir, "eval.json"))
    print_summary(results)
    with tensorboard_writes(output_dir), tensorboard_writer(output_dir) as tensorboard:
        plots = write_evaluation_plots(output_dir, tensorboard=tensorboard)
    print(f"plots: {', '.join(os.path.basename(p) for p in plots)}")
    print(f"{results['seconds_per_image']:.4f} s/image; wrote {os.path.join(output_dir, 'eval.json')} and the "
          f"detections beside it")
    if cfg.vis_images:
        draw_dataset_predictions(model, dataset, os.path.join(output_dir, "vis"), cfg.vis_images)
    return results
