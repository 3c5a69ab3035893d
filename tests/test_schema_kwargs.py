"""The schema follows ``**kwargs`` to the constructor that receives them: a head that passes its shared
arguments on to ``ROIHeads`` still has every key checked, by name and range, wherever it is set."""
import pytest

from detectres.apps.schemas import validate_tool_config
from detectres.config import compose_config
from detectres.config.schema import ConfigError
from detectres.config.validation import accepted_parameters
from detectres.modeling.roi_heads.base import ROIHeads
from detectres.modeling.roi_heads.fpn_head import FPNROIHeads
from detectres.modeling.roi_heads.res5_head import Res5ROIHeads


@pytest.mark.parametrize("model, head", [("r50_c4", "Res5ROIHeads"), ("r50_fpn", "FPNROIHeads")])
@pytest.mark.parametrize("override, message", [
    ("+model.roi_heads.nms_thres=0.5", r"model.roi_heads.nms_thres: not a parameter of .*{head}"),
    ("model.roi_heads.nms_thresh=1.5", r"model.roi_heads.nms_thresh=1.5: must be a number in \[0, 1\]"),
    ("model.roi_heads.detections_per_image=0", r"model.roi_heads.detections_per_image=0: must be an integer in"),
])
def test_a_wrong_shared_head_key_is_refused_naming_it(model, head, override, message):
    cfg = compose_config("train", [f"model={model}", override])
    with pytest.raises(ConfigError, match=message.format(head=head)):
        validate_tool_config("train", cfg)


class OpenHead(ROIHeads):
    """A user's head: its own argument, the rest passed on."""

    def __init__(self, *, gain: float = 1.0, **rest):
        super().__init__(**rest)
        self.gain = gain


def test_the_chain_is_followed_to_the_first_constructor_without_kwargs():
    hints, signature = accepted_parameters(OpenHead)
    assert "gain" in signature.parameters and "nms_thresh" in signature.parameters
    assert "kwargs" not in signature.parameters and "rest" not in signature.parameters  # closed by ROIHeads
    assert str(hints["nms_thresh"]).endswith("Range(lo=0, hi=1, lo_open=False, hi_open=False)]")
    for head in (Res5ROIHeads, FPNROIHeads):  # the heads declare only their own arguments
        own = set(head.__init__.__code__.co_varnames[: head.__init__.__code__.co_kwonlyargcount + 1])
        assert not own & {"nms_thresh", "score_thresh", "batch_size_per_image"}, head
