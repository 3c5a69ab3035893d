from detectres.evaluation.coco import COCOEvaluator
from detectres.evaluation.evaluator import build_evaluator, evaluate_detector
from detectres.evaluation.voc import VOCEvaluator

__all__ = ["COCOEvaluator", "VOCEvaluator", "build_evaluator", "evaluate_detector"]
