"""Every command the README shows still matches the tools: each Hydra tool's overrides compose against the
project's configs and pass the tool's schema (nothing is run), and every --flag of an argparse tool is one
its --help lists. A renamed key or option fails here, not in a user's terminal."""
import contextlib
import io
import re
import shlex

import pytest

from detectres.apps.commands import COMMANDS
from detectres.apps.schemas import validate_tool_config
from detectres.config import PROJECT_ROOT, compose_config
from detectres.config.schema import ConfigError

SCRIPTS = {"tools/train_net.py": "detectres-train", "tools/test_net.py": "detectres-test",
           "tools/predict.py": "detectres-predict", "demo/demo.py": "detectres-demo",
           "tools/check_data.py": "detectres-check-data", "tools/ablation.py": "detectres-ablation",
           "tools/benchmark.py": "detectres-benchmark", "tools/train_benchmark.py": "detectres-train-benchmark",
           "tools/convert_weights.py": "detectres-convert", "tools/export.py": "detectres-export",
           "tools/plot_results.py": "detectres-plot", "tools/gpu_latency.py": "detectres-gpu-latency",
           "tools/scoring_benchmark.py": "detectres-scoring-benchmark",
           "tools/scale_benchmark.py": "detectres-scale-benchmark", "tools/zoo.py": "detectres-zoo"}


def readme_commands() -> list[tuple[str, list[str]]]:
    """(console command, arguments) for every tool invocation in the README's bash blocks."""
    text = (PROJECT_ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                for i, word in enumerate(words):
                    command = SCRIPTS.get(word) or (word if word in COMMANDS else None)
                    if command:
                        found.append((command, [w for w in words[i + 1:] if w != "..."]))
                        break
    return found


COMMANDS_SHOWN = readme_commands()


def test_the_readme_shows_the_main_tools():
    shown = {command for command, _ in COMMANDS_SHOWN}
    assert {"detectres-train", "detectres-test", "detectres-predict", "detectres-demo", "detectres-check-data",
            "detectres-convert"} <= shown and len(COMMANDS_SHOWN) >= 25


@pytest.mark.parametrize("command, args", COMMANDS_SHOWN, ids=[f"{c} {' '.join(a)}"[:80] for c, a in COMMANDS_SHOWN])
def test_every_readme_command_matches_its_tool(command, args):
    module, function, config = COMMANDS[command]
    if config is None:  # an argparse tool: every --flag used is one it has
        import importlib

        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit), pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.argv", [command, "--help"])
            getattr(importlib.import_module(f"detectres.apps.{module}"), function)()
        for flag in (a.split("=")[0] for a in args if a.startswith("--")):
            assert flag in out.getvalue(), f"{command} has no {flag}"
        return
    cfg = compose_config(config, args)
    try:
        validate_tool_config(config, cfg)
    except ConfigError as e:
        if "no CUDA GPU" not in str(e):  # the README's GPU examples, on a machine without one
            raise
