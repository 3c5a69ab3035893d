from detectres.modeling.backbones.fpn import FPN
from detectres.modeling.backbones.norm import FrozenBatchNorm2d
from detectres.modeling.backbones.resnet import ResNet, ResNetTrunk

__all__ = ["FPN", "FrozenBatchNorm2d", "ResNet", "ResNetTrunk"]
