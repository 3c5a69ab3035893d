from detectres.evaluation.coco import COCOEvaluator, evaluate_detector

__all__ = ["COCOEvaluator", "evaluate_detector"]
