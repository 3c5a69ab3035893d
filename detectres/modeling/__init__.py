"""Model parts: box math, anchors, ResNet backbones, RPN, RoI heads and the assembled detector."""
