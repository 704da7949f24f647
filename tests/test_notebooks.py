"""The three notebooks: stored without outputs, no logic of their own, Kaggle defaults in one
papermill parameters cell, papermill SETTINGS merged over the notebooks' defaults. Their
headless runs, as on Kaggle, are in test_kaggle_dry_run.py."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("01_prepare_tfrecords.ipynb", "02_train_dolg.ipynb", "03_knn_inference.ipynb")
# Modules a notebook may import besides `landmarks`: display and path helpers only.
ALLOWED_IMPORTS = {"os", "importlib", "pandas", "IPython"}
# Statements and expressions that would be logic of the notebook's own.
FORBIDDEN = {
    ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition",
    ast.ClassDef: "a class definition",
    ast.Lambda: "a lambda",
    ast.For: "a loop",
    ast.AsyncFor: "a loop",
    ast.While: "a loop",
    ast.ListComp: "a comprehension (a loop)",
    ast.SetComp: "a comprehension (a loop)",
    ast.DictComp: "a comprehension (a loop)",
    ast.GeneratorExp: "a generator (a loop)",
    ast.Try: "exception handling",
    ast.With: "a context manager",
    ast.Global: "a global statement",
}


def _python_source(cell_source: str) -> str:
    """The cell as plain Python (IPython magics such as %pip become function calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(cell_source)


def logic_in(cell_source: str) -> list[str]:
    """What in a code cell is logic of its own (empty when the cell only calls the package),
    plus imports of modules other than landmarks and ALLOWED_IMPORTS."""
    problems = []
    for node in ast.walk(ast.parse(_python_source(cell_source))):
        for kind, what in FORBIDDEN.items():
            if isinstance(node, kind):
                problems.append(f"line {node.lineno}: {what}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            )
            for module in modules:
                top = (module or "").split(".")[0]
                if top != "landmarks" and top not in ALLOWED_IMPORTS:
                    problems.append(f"line {node.lineno}: imports {module}")
    return problems


def _load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _parameters(notebook) -> dict:
    """The literal values assigned in the parameters cell."""
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    values = {}
    for statement in ast.parse(cell.source).body:
        assert isinstance(statement, ast.Assign), f"not an assignment: {ast.unparse(statement)}"
        values[statement.targets[0].id] = ast.literal_eval(statement.value)
    return values


# --- static checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    notebook = _load(name)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in _code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None, cell.id


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_what_the_generator_writes(name):
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", NOTEBOOKS / "build_notebooks.py"
    )
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert (NOTEBOOKS / name).read_text(encoding="utf-8") == generator.render(name), (
        "run .venv/bin/python notebooks/build_notebooks.py"
    )


@pytest.mark.parametrize("name", NAMES)
def test_code_cells_only_call_the_package(name):
    notebook = _load(name)
    for cell in _code_cells(notebook):
        assert logic_in(cell.source) == [], f"{name} {cell.id}:\n{cell.source}"
    assert any("landmarks" in cell.source for cell in _code_cells(notebook))
    markdown = [cell for cell in notebook.cells if cell.cell_type == "markdown"]
    assert len(markdown) >= len(_code_cells(notebook)) - 1  # a narrative around the calls


def test_the_logic_check_finds_logic():
    assert logic_in("def f():\n    return 1") == ["line 1: a function definition"]
    assert logic_in("for x in range(3):\n    print(x)") == ["line 1: a loop"]
    assert logic_in("y = [x for x in range(3)]") == ["line 1: a comprehension (a loop)"]
    assert logic_in("import numpy as np") == ["line 1: imports numpy"]
    assert logic_in("from landmarks.training import train\nrun = train(c)") == []
    assert logic_in("if X:\n    %pip install --no-index {W} landmarks") == []


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_holds_kaggle_defaults_first(name):
    notebook = _load(name)
    code = _code_cells(notebook)
    assert code[0].metadata.get("tags") == ["parameters"]
    values = _parameters(notebook)
    import papermill

    inferred = papermill.inspect_notebook(str(NOTEBOOKS / name))  # what --help-notebook shows
    assert sorted(inferred) == sorted(values)
    paths = [v for v in values.values() if isinstance(v, str) and v.startswith("/")]
    assert paths and all(p.startswith(("/kaggle/input/", "/kaggle/working")) for p in paths)
    # The next code cells detect the platform through one landmarks call.
    assert any("detect_environment()" in cell.source for cell in code[1:4])


@pytest.mark.parametrize("name", NAMES[1:])
def test_keras_backend_is_chosen_before_keras_is_imported(name):
    code = _code_cells(_load(name))
    chooses = [i for i, cell in enumerate(code) if "select_backend(BACKEND)" in cell.source]
    imports_keras = [
        i
        for i, cell in enumerate(code)
        if any(f"landmarks.{stage}" in cell.source for stage in ("training", "inference", "models"))
    ]
    assert len(chooses) == 1 and chooses[0] <= 2 and chooses[0] < min(imports_keras)
    assert _parameters(_load(name))["BACKEND"] == ""


def _configured(name: str, parameters: dict):
    """Run, in this process, the parameters cell, the cell papermill injects for `parameters`
    and the notebook's configuration cell; returns the Config that cell builds."""
    import papermill

    notebook = papermill.iorw.load_notebook_node(str(NOTEBOOKS / name))  # as papermill reads it
    injected = papermill.parameterize.parameterize_notebook(notebook, parameters)
    cells = [c for c in _code_cells(injected) if "parameters" in c.metadata.get("tags", [])]
    cells += [
        c for c in _code_cells(injected) if "injected-parameters" in c.metadata.get("tags", [])
    ]
    cells += [c for c in _code_cells(injected) if "config.update(" in c.source]
    namespace: dict = {}
    for cell in cells:
        exec(_python_source(cell.source), namespace)
    return namespace["config"]


def test_papermill_settings_are_merged_over_the_training_notebook_defaults(tmp_path):
    config = _configured(NAMES[1], {"SETTINGS": {"epochs": 1, "batch_size": 8}})
    # The keys not passed keep the notebook's defaults, not Config's (weights None, 256 px).
    assert (config.weights, config.image_size, config.backbone) == (
        "imagenet",
        512,
        "efficientnet_b0",
    )
    assert (config.epochs, config.batch_size) == (1, 8)
    preset = tmp_path / "preset.yaml"
    preset.write_text("backbone: efficientnet_b3\nimage_size: 384\nepochs: 20\n")
    config = _configured(NAMES[1], {"CONFIG_FILE": str(preset), "SETTINGS": {"epochs": 2}})
    assert (config.backbone, config.image_size, config.epochs) == ("efficientnet_b3", 384, 2)
    assert config.weights is None  # a preset replaces the notebook defaults, Config's fill in
    config = _configured(NAMES[1], {"RESUME_FROM": "/kaggle/input/run-v1", "STOP_AFTER_EPOCHS": 6})
    assert (config.resume_from, config.stop_after_epochs) == ("/kaggle/input/run-v1", 6)


def test_papermill_settings_are_merged_over_the_inference_notebook_defaults(tmp_path):
    (tmp_path / "config.yaml").write_text("image_size: 384\nknn_k: 3\nrun_name: r\n")
    parameters = {"MODEL_DIR": str(tmp_path), "SETTINGS": {"tta_flip": True}}
    config = _configured(NAMES[2], parameters)
    assert (config.tta_flip, config.knn_k, config.batch_size) == (True, 10, 64)
    assert config.image_size == 384  # from the run's config.yaml
    assert config.train_embeddings == str(tmp_path / "embeddings" / "train.npz")


def test_papermill_uses_this_virtualenv_kernel(tmp_path, monkeypatch):
    """kernel_name "python3" must start this interpreter (the venv), not a system Python."""
    import papermill

    monkeypatch.setenv("JUPYTER_PATH", os.path.join(sys.prefix, "share", "jupyter"))
    probe = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)")]
    )
    nbformat.write(probe, tmp_path / "probe.ipynb")
    papermill.execute_notebook(
        str(tmp_path / "probe.ipynb"),
        str(tmp_path / "out.ipynb"),
        kernel_name="python3",
        progress_bar=False,
    )
    printed = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs[0].text
    assert printed.strip() == sys.prefix  # the venv (its python may link to a system one)
