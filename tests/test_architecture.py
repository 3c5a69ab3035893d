"""The package's structure stays as docs/ARCHITECTURE.md draws it: imports point down the layers, the
command-line scripts stay thin, and functions stay short."""
import ast
import importlib.util
import os
import re
import statistics


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom to top. A module may import from lower layers and from its own package; never from a higher
# layer, nor from another package of its own layer.
LAYERS = [
    ("base", ["detectres.utils", "detectres.structures", "detectres.version"]),
    ("config", ["detectres.config"]),
    ("parts", ["detectres.modeling", "detectres.data"]),
    ("weights", ["detectres.weights"]),
    ("engine", ["detectres.engine", "detectres.evaluation", "detectres.predictor"]),
    ("applications", ["detectres.apps"]),
]
FACADE = "detectres"  # the package root re-exports the Python API (Detector), lazily
SCRIPT_IMPORTS = ("detectres.apps", "detectres.config")  # all tools/ and demo/ may use
MAX_FUNCTION_LINES = 60
MAX_SCRIPT_LINES = 30


def package_of(module: str) -> str | None:
    for _, packages in LAYERS:
        for p in packages:
            if module == p or module.startswith(p + "."):
                return p
    return None


def layer_of(module: str) -> int:
    return next(i for i, (_, packages) in enumerate(LAYERS) if package_of(module) in packages)


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def python_files(*folders):
    for folder in folders:
        for root, _, files in os.walk(os.path.join(ROOT, folder)):
            yield from (os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))


def detectres_imports(path: str, name: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of detectres anywhere in the file (functions included);
    ``name`` is the file's module name, to resolve relative imports."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            found += [(node.lineno, base if base != "detectres" else f"{base}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m == "detectres" or m.startswith("detectres.")]


def violations(path: str, name: str) -> list[str]:
    """The imports of module ``name`` (file ``path``) that point up the layers or across to a sibling."""
    own_package, own_layer = package_of(name), layer_of(name)
    wrong = []
    for line, target in detectres_imports(path, name):
        target_package = package_of(target)
        if target_package == own_package:
            continue
        if target_package is None or layer_of(target) >= own_layer:
            where = "a higher layer" if target_package is None or layer_of(target) > own_layer else "a sibling"
            wrong.append(f"{os.path.basename(path)}:{line} imports {target} ({where})")
    return wrong


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in python_files("detectres")
                if module_name(p) != FACADE and package_of(module_name(p)) is None]
    assert not unplaced, f"add these to LAYERS (and docs/ARCHITECTURE.md): {unplaced}"


def test_imports_point_down_the_layers():
    wrong = [f"{os.path.relpath(os.path.dirname(p), ROOT)}/{v}" for p in python_files("detectres")
             if module_name(p) != FACADE for v in violations(p, module_name(p))]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_wrong_imports(tmp_path):
    """The rule is not vacuous: a sibling import, an upward import (also inside a function) and a relative
    one are all caught, and an import from a lower layer is not."""
    path = tmp_path / "probe.py"
    path.write_text("from detectres.utils.comm import get_rank\nfrom detectres.modeling.detector import FasterRCNN\n"
                    "def f():\n    import detectres.apps.train\n    from ..weights import restore\n")
    assert violations(str(path), "detectres.data.probe") == [
        "probe.py:2 imports detectres.modeling.detector (a sibling)",
        "probe.py:4 imports detectres.apps.train (a higher layer)",
        "probe.py:5 imports detectres.weights (a higher layer)"]


def test_scripts_are_thin_wrappers_over_the_applications():
    for path in python_files("tools", "demo"):
        code = [ln for ln in open(path) if ln.strip() and not ln.lstrip().startswith("#")]
        body = ast.get_docstring(ast.parse(open(path).read())) or ""
        assert len(code) - body.count("\n") - 1 <= MAX_SCRIPT_LINES, f"{path}: move the logic into detectres.apps"
        for line, target in detectres_imports(path, "script"):
            assert target.startswith(SCRIPT_IMPORTS), f"{path}:{line} imports {target}; scripts use detectres.apps"


def function_lengths():
    out = []
    for path in python_files("detectres", "tools", "demo"):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}"
                out.append((node.end_lineno - node.lineno + 1, where))
    return sorted(out)


def test_functions_stay_short():
    lengths = function_lengths()
    print(f"{len(lengths)} functions: median {statistics.median(n for n, _ in lengths)} lines, "
          f"longest {lengths[-1][0]} ({lengths[-1][1]})")
    long = [f"{where} ({n} lines)" for n, where in lengths if n > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_architecture_doc_lists_the_same_layers():
    doc = open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")).read()
    rows = re.findall(r"^\| (\d) (\w+) \| ([^|]+) \|", doc, flags=re.M)
    assert [(name, re.findall(r"`(detectres[\w.]*)`", packages)) for _, name, packages in rows] == LAYERS
    assert [int(n) for n, _, _ in rows] == list(range(len(LAYERS)))


def test_modeling_imports_without_the_config_machinery():
    """The parts a model is made of declare their parameters with the plain constraint vocabulary
    (``detectres.config.constraints``): importing them loads neither Hydra nor OmegaConf. Only
    ``modeling/build.py``, which builds a model from a config node, may."""
    import subprocess
    import sys

    folder = os.path.join(ROOT, "detectres", "modeling")
    modules = sorted("detectres." + os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "detectres"))[:-3]
                     .replace(os.sep, ".").removesuffix(".__init__")
                     for d, _, files in os.walk(folder) for f in files if f.endswith(".py"))
    modules = [m for m in modules if m != "detectres.modeling.build"]
    assert "detectres.modeling.rpn" in modules and len(modules) > 15
    code = (f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('omegaconf', 'hydra'))\n"
            "assert not loaded, loaded[:5]")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
