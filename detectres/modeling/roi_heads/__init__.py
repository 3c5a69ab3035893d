from detectres.modeling.roi_heads.base import ROIHeads
from detectres.modeling.roi_heads.fpn_head import FCHead, FPNROIHeads
from detectres.modeling.roi_heads.predictor import FastRCNNPredictor
from detectres.modeling.roi_heads.res5_head import Res5ROIHeads

__all__ = ["FCHead", "FPNROIHeads", "FastRCNNPredictor", "ROIHeads", "Res5ROIHeads"]
