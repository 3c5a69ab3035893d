"""Shared by the Detectron2 fixture tests: the fixture's deterministic weights, written as a model-zoo
style ``.pkl`` (Detectron2 names, numpy arrays), and one training step compared with a reference."""
import contextlib
import importlib.util
import os
import pickle

import torch

from detectres.weights.detectron2 import rename_detectron2_key

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "detectron2")


def make_weights_module():
    spec = importlib.util.spec_from_file_location("make_weights", os.path.join(FIXTURE, "make_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_STATES: dict = {}


def detectron2_state(seed=0, schema=None, schema_file="schema_R50_C4.json"):
    """The fixture weights: Detectron2 names in ``schema`` (or ``schema_file``'s) order, filled by make_weights.py.
    A schema file's weights are made once per session (several test modules use them; do not modify them)."""
    mw = make_weights_module()
    if schema is not None:
        return mw.make_state_dict(schema, seed, rpn_head_std=0.01, verbose=False)
    if (seed, schema_file) not in _STATES:
        _STATES[(seed, schema_file)] = detectron2_state(seed, mw.load_schema(os.path.join(FIXTURE, schema_file)))
    return _STATES[(seed, schema_file)]


def write_model_zoo_pkl(path, state=None) -> str:
    state = detectron2_state() if state is None else state
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "fixture"}, f)
    return str(path)


def reference_training_step(model, ref: dict) -> dict[str, float]:
    """One training forward and backward of ``model`` on a training reference's image and targets (after
    ``torch.manual_seed(7)`` in the ``seeded`` mode, as the reference did right before its forward), on
    every core (these are the slowest tests; nothing else runs); returns the four losses."""
    model.train()
    item = {"image": ref["image"], "gt_boxes": ref["gt_boxes"], "gt_classes": ref["gt_classes"]}
    with all_cores():
        if ref["mode"] == "seeded":
            torch.manual_seed(7)
        losses = model([item])
        sum(losses.values()).backward()
    return {k: float(v.detach()) for k, v in losses.items()}


@contextlib.contextmanager
def all_cores():
    """Torch threads on every core for an 800 px R50 run (the suite runs one test at a time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def gradient_errors(model, ref_grads: dict) -> dict[str, float]:
    """Per Detectron2 parameter name, the largest of: |absmax| difference, |L2 norm| difference (relative)
    and the largest difference of the first values, each over the reference's largest value. Also checks
    that the same parameters learn."""
    params = dict(model.named_parameters())
    assert {rename_detectron2_key(k) for k in ref_grads} == {k for k, p in params.items() if p.requires_grad}
    errors = {}
    for d2_name, r in ref_grads.items():
        grad = params[rename_detectron2_key(d2_name)].grad.flatten()
        errors[d2_name] = max(abs(float(grad.abs().max()) - r["absmax"]) / r["absmax"],
                              abs(float(grad.norm()) - r["norm"]) / r["norm"],
                              float((grad[:len(r["head"])] - r["head"]).abs().max()) / r["absmax"])
    return errors
