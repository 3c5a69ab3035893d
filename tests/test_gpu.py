"""GPU paths (skipped without CUDA; run by tools/gpu_check.sh on a lent GPU)."""
import numpy as np
import pytest
import torch

from detectres import Detector
from detectres.config import compose_config
from detectres.modeling.build import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_training_step_on_cuda():
    cfg = compose_config("train", ["model=quickstart"])
    model = build_model(cfg.model, num_classes=3).cuda().train()
    item = {"image": torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8),
            "gt_boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "gt_classes": torch.tensor([1])}
    losses = model([item])
    assert all(torch.isfinite(v) and v.device.type == "cuda" for v in losses.values())
    sum(losses.values()).backward()


def test_cuda_detections_match_cpu_and_fp16_runs():
    image = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    torch.manual_seed(0)
    cpu = Detector.from_config("quickstart", class_names=["a", "b", "c"], device="cpu")
    gpu = Detector(cpu.model, class_names=cpu.class_names, min_size=cpu.min_size, max_size=cpu.max_size)
    ref = cpu.predict(image)
    gpu.model.cuda()
    out = gpu.predict(image)
    assert len(out["scores"]) == len(ref["scores"])
    np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-3)
    gpu.amp = "fp16"
    half = gpu.predict(image)
    assert half["boxes"].dtype == np.float32 and np.isfinite(half["boxes"]).all()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_on_cuda(amp):
    from detectres.engine.trainer import Trainer

    cfg = compose_config("train", ["model=quickstart"])
    model = build_model(cfg.model, num_classes=3).cuda().train()
    item = {"image": torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8),
            "gt_boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "gt_classes": torch.tensor([1]), "sample_seed": 3}
    trainer = Trainer(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), data_loader=[],
                      max_iter=0, hooks=[], amp=amp, clip_grad_norm=5.0)
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        losses = trainer.run_step([item])
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sync_bn_converts_on_cuda():
    cfg = compose_config("train", ["model=quickstart"])
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_model(cfg.model, num_classes=3).cuda())
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
