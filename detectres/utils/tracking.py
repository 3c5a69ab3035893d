"""Experiment trackers a run reports to besides ``metrics.jsonl`` (``runtime.loggers``): MLflow and
Weights & Biases. TensorBoard, the default, lives in :mod:`detectres.utils.events`.

Each tracker gets the run's flattened config as parameters, the scalars of every logging step and every
evaluation, the files worth looking at (plots, ``eval.json``, ``config.yaml``) as artifacts, and the final
checkpoint's path. Both are optional installs; :func:`missing_tracker` names the ``pip install`` line
before any work starts.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from typing import Any

logger = logging.getLogger(__name__)

EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
STATE_FILE = "tracking.json"  # the trackers' run ids, so that a resumed run reports to the same runs


def missing_tracker(loggers: list[str], key: str = "runtime.loggers") -> str | None:
    """What to say when a requested tracker's package is missing (one line naming what to install)."""
    for name in loggers:
        if importlib.util.find_spec(EXTRAS[name]) is None:
            return (f"{key}={list(loggers)}: {name} is not installed; run: pip install 'detectres[{name}]' "
                    f"(or pip install {EXTRAS[name]})")
    return None


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"solver": {"max_iter": 5}}`` -> ``{"solver.max_iter": "5"}`` (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters): a tracker library's error in one line."""
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def read_state(output_dir: str) -> dict:
    path = os.path.join(output_dir, STATE_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            state = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not the trackers' run ids this folder's runs write ({e}); delete it to report "
                         "to new runs") from None
    return state if isinstance(state, dict) else {}


def write_state(output_dir: str, **ids: str) -> None:
    from detectres.utils.file_io import atomic_write_text

    atomic_write_text(json.dumps({**read_state(output_dir), **ids}), os.path.join(output_dir, STATE_FILE))


class MlflowTracker:
    """The MLflow client on ``MLFLOW_TRACKING_URI``, else a local store in ``./mlruns`` (SQLite database and
    artifact folder; ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`` shows it). Experiment
    ``MLFLOW_EXPERIMENT_NAME`` or ``detectres``; a resumed run continues its MLflow run."""

    def __init__(self, *, output_dir: str, run_name: str, params: dict[str, str], resume: bool):
        from mlflow.tracking import MlflowClient

        saved = read_state(output_dir) if resume else {}
        uri = saved.get("mlflow_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            store = os.path.abspath("mlruns")
            os.makedirs(store, exist_ok=True)
            uri, artifacts = f"sqlite:///{store}/mlflow.db", f"file://{store}/artifacts"
        self.uri = uri
        self.client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "detectres")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            name, artifact_location=artifacts)
        previous = saved.get("mlflow_run_id")
        if previous and self.has_run(previous):
            self.run_id = previous
            self.client.update_run(previous, status="RUNNING")
        else:
            if previous:
                logger.warning("MLflow: run %s is not in %s any more: this run reports to a new one", previous, uri)
            run = self.client.create_run(experiment_id, run_name=run_name,
                                         tags={"detectres.output_dir": os.path.abspath(output_dir)})
            self.run_id = run.info.run_id
            self.log_params(params)
            write_state(output_dir, mlflow_run_id=self.run_id, mlflow_uri=uri)
        logger.info("MLflow: run %s in experiment %s at %s", self.run_id, name, uri)

    def has_run(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()])

    def log_artifacts(self, paths: list[str]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, path)

    def finish(self, *, final_checkpoint: str | None, failed: bool) -> None:
        if final_checkpoint:
            self.client.set_tag(self.run_id, "final_checkpoint", os.path.abspath(final_checkpoint))
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def wandb_mode() -> str:
    """``WANDB_MODE`` if set; online when the user has logged in (an API key in the environment or in
    ``~/.netrc``, where ``wandb login`` puts it); offline otherwise (``wandb sync`` uploads it later)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = os.path.expanduser("~/.netrc")
    if os.path.isfile(netrc):
        with open(netrc) as f:
            if "api.wandb.ai" in f.read():
                return "online"
    return "offline"


class WandbTracker:
    """A Weights & Biases run in ``<output_dir>/wandb`` (project ``WANDB_PROJECT`` or ``detectres``); offline
    unless the user logged in; a resumed run continues its W&B run."""

    def __init__(self, *, output_dir: str, run_name: str, params: dict[str, str], config: dict, resume: bool):
        import wandb

        previous = read_state(output_dir).get("wandb_run_id") if resume else None
        self.output_dir = output_dir
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "detectres"), name=run_name, dir=output_dir,
                              config=config, mode=wandb_mode(), id=previous, resume="allow" if previous else None)
        write_state(output_dir, wandb_run_id=self.run.id)
        logger.info("W&B: run %s (%s) in %s", self.run.id, wandb_mode(), self.run.dir)

    def log_metrics(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def log_artifacts(self, paths: list[str]) -> None:
        for path in paths:
            self.run.save(os.path.abspath(path), base_path=os.path.dirname(os.path.abspath(path)), policy="now")

    def finish(self, *, final_checkpoint: str | None, failed: bool) -> None:
        if final_checkpoint:
            self.run.summary["final_checkpoint"] = os.path.abspath(final_checkpoint)
        self.run.finish(exit_code=1 if failed else 0)


def start_trackers(loggers: list[str], *, output_dir: str, run_name: str, config: dict, resume: bool) -> list[Any]:
    """The MLflow / W&B trackers ``loggers`` asks for, started (TensorBoard is not one of these)."""
    params = flat_params(config)
    makers = {"mlflow": lambda: MlflowTracker(output_dir=output_dir, run_name=run_name, params=params, resume=resume),
              "wandb": lambda: WandbTracker(output_dir=output_dir, run_name=run_name, params=params, config=config,
                                            resume=resume)}
    out: list[Any] = []
    for name in (n for n in ("mlflow", "wandb") if n in loggers):
        try:
            out.append(makers[name]())
        except Exception as e:  # noqa: BLE001 - whatever the tracker's library raises, said in one line
            for tracker in out:
                tracker.finish(final_checkpoint=None, failed=True)
            raise ValueError(f"runtime.loggers: could not start {name} ({first_line(e)})") from e
    return out
