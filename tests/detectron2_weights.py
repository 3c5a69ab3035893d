"""Shared by the Detectron2 fixture tests: the fixture's deterministic weights, written as a model-zoo
style ``.pkl`` (Detectron2 names, numpy arrays)."""
import importlib.util
import os
import pickle

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "detectron2")


def make_weights_module():
    spec = importlib.util.spec_from_file_location("make_weights", os.path.join(FIXTURE, "make_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def detectron2_state(seed=0, schema=None, schema_file="schema_R50_C4.json"):
    """The fixture weights: Detectron2 names in ``schema`` (or ``schema_file``'s) order, filled by make_weights.py."""
    mw = make_weights_module()
    schema = schema or mw.load_schema(os.path.join(FIXTURE, schema_file))
    return mw.make_state_dict(schema, seed, rpn_head_std=0.01, verbose=False)


def write_model_zoo_pkl(path, state=None) -> str:
    state = detectron2_state() if state is None else state
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "fixture"}, f)
    return str(path)
