import pytest
import torch
import torchvision

from detectres.modeling.backbones.norm import ConvNorm, FrozenBatchNorm2d
from detectres.modeling.backbones.resnet import ResNet
from detectres.weights.torchvision import convert_torchvision_resnet


def randomise_bn_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics so a wrong norm mapping cannot pass unnoticed."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 0.2 + 0.4 * torch.rand(m.num_features, generator=g)
            m.bias.data = 0.05 * torch.randn(m.num_features, generator=g)
            m.running_mean = 0.05 * torch.randn(m.num_features, generator=g)
            m.running_var = 0.8 + 0.4 * torch.rand(m.num_features, generator=g)


def torchvision_features(tv: torchvision.models.ResNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    x = tv.layer3(tv.layer2(tv.layer1(x)))
    return x, tv.layer4(x)


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_torchvision_state_dict_reproduces_res4_res5(depth):
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    randomise_bn_stats(tv, seed=depth)
    ours = ResNet(depth=depth, stride_in_1x1=False, norm="FrozenBN", freeze_at=0).eval()
    ours.load_state_dict(convert_torchvision_resnet(tv.state_dict()), strict=True)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref4, ref5 = torchvision_features(tv, x)
        res4 = ours(x, "res4")
        res5 = ours.res5(res4)
    for ref, got in [(ref4, res4), (ref5, res5)]:
        assert got.shape == ref.shape
        rel = (got - ref).abs().max() / ref.abs().max()
        assert rel < 1e-4, f"max relative difference {rel:.2e}"


def test_depths_and_forms_build_and_run():
    x = torch.randn(1, 3, 64, 64)
    for depth in (18, 34, 50, 101, 152):
        for preact in (False, True):
            net = ResNet(depth=depth, preact=preact, norm="BN", freeze_at=0,
                         widths=None if depth < 100 else [32, 64, 128, 256], stem_channels=16 if depth >= 100 else 64)
            out = net(x)
            assert out.shape[1] == net.out_channels["res5"] and out.shape[-1] == 2
    expected_blocks = {18: 8, 34: 16, 50: 16, 101: 33, 152: 50}
    for depth, blocks in expected_blocks.items():
        net = ResNet(depth=depth, widths=[8, 8, 8, 8] if depth < 50 else [16, 16, 16, 16], stem_channels=8)
        assert sum(len(getattr(net, s)) for s in ("res2", "res3", "res4", "res5")) == blocks


def test_stride_position():
    msra = ResNet(depth=50, stride_in_1x1=True)
    tv = ResNet(depth=50, stride_in_1x1=False)
    assert msra.res3[0].conv1.stride == (2, 2) and msra.res3[0].conv2.stride == (1, 1)
    assert tv.res3[0].conv1.stride == (1, 1) and tv.res3[0].conv2.stride == (2, 2)


def test_preactivation_block_has_nothing_after_addition():
    net = ResNet(depth=18, preact=True, norm="BN", freeze_at=0, widths=[8, 16, 32, 64], stem_channels=8).eval()
    block = net.res2[0]
    x = torch.randn(1, 8, 16, 16)
    # identity shortcut: the output can be negative (no ReLU after the sum)
    out = block(x)
    assert (out < 0).any()
    with torch.no_grad():
        branch = block.conv2(torch.relu(block.norm2(block.conv1(torch.relu(block.norm1(x))))))
    assert torch.allclose(out, x + branch, atol=1e-6)


def test_norms_and_freeze_at():
    gn = ResNet(depth=18, norm="GN", freeze_at=0, widths=[16, 32, 64, 128], stem_channels=16)
    assert isinstance(gn.res2[0].conv1.norm, torch.nn.GroupNorm)
    bn = ResNet(depth=50, norm="BN", freeze_at=2)
    assert isinstance(bn.stem.conv1.norm, FrozenBatchNorm2d) and isinstance(bn.res2[0].conv1.norm, FrozenBatchNorm2d)
    assert isinstance(bn.res3[0].conv1.norm, torch.nn.BatchNorm2d)
    assert not any(p.requires_grad for p in bn.res2.parameters())
    assert all(p.requires_grad for p in bn.res3.parameters())
    with pytest.raises(ValueError, match="norm"):
        ResNet(depth=18, norm="LN")
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=42)


def test_frozen_bn_folding_matches_conv_then_bn():
    conv = ConvNorm(8, 16, kernel_size=3, norm="FrozenBN")
    conv.norm.weight.uniform_(0.2, 0.6)
    conv.norm.bias.normal_()
    conv.norm.running_mean.normal_()
    conv.norm.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, 10, 10)
    ref = conv.norm(torch.nn.functional.conv2d(x, conv.weight, None, 1, 1))
    assert torch.allclose(conv(x), ref, atol=1e-5)
    conv(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
