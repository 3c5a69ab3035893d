from detectres.modeling.roi_heads.predictor import FastRCNNPredictor
from detectres.modeling.roi_heads.res5_head import Res5ROIHeads

__all__ = ["FastRCNNPredictor", "Res5ROIHeads"]
