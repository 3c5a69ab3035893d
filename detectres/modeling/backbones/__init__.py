from detectres.modeling.backbones.norm import FrozenBatchNorm2d
from detectres.modeling.backbones.resnet import ResNet, ResNetTrunk

__all__ = ["FrozenBatchNorm2d", "ResNet", "ResNetTrunk"]
