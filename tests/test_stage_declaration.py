"""The stage declaration is the one list of the stages: dvc.yaml, the package layout, the pyproject
extras, the images and the params schema are held to it here (pure logic, no servers)."""

from __future__ import annotations

import ast
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from components.core.params import Params, load_params, stage_params
from components.core.stages import STAGE_NAMES, STAGES, stage_edges
from components.images.names import IMAGES, PIPELINE_IMAGE, PREDICT_IMAGE, SERVE_IMAGE

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "components"
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# dvc.yaml stages that exist only for DVC's change detection (Kubeflow never caches preprocess
# instead); they are not stages of the declaration.
DVC_ONLY_STAGES = {"annotations-listing"}


def dvc_paths(entries: list) -> list[str]:
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries or []]


def module_file(module: str) -> Path | None:
    """The file of a ``components.*`` module (package ``__init__`` or ``.py``)."""
    path = REPO.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_modules(path: Path) -> set[str]:
    """The ``components.*`` modules a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.startswith("components") and module_file(name)}
    return found


def import_closure(stage: str) -> set[Path]:
    """Every project file the stage's package reaches through its imports."""
    pending = [path for path in (PACKAGE / stage).rglob("*.py") if "__pycache__" not in path.parts]
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            pending.append(module_file(module))
    return {path.relative_to(REPO) for path in seen}


def test_every_declared_stage_has_its_package_with_a_main() -> None:
    for stage in STAGES:
        main = PACKAGE / stage.name / "__main__.py"
        assert main.is_file(), f"declared stage {stage.name} has no {main.relative_to(REPO)}"
        tree = ast.parse(main.read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert {"run", "main"} <= functions, f"{main}: every stage has run() and main()"
        assert ast.get_docstring(tree), f"{main}: the stage's --help description"


def test_dvc_yaml_lists_exactly_the_declared_stages_and_edges() -> None:
    assert set(DVC) - DVC_ONLY_STAGES == set(STAGE_NAMES)
    outs = {
        name: dvc_paths(s.get("outs", []) + s.get("metrics", []) + s.get("plots", []))
        for name, s in DVC.items()
    }
    edges = set()
    for consumer, dvc_stage in DVC.items():
        for dep in dvc_paths(dvc_stage.get("deps", [])):
            for producer, produced in outs.items():
                if any(dep == out or dep.startswith(f"{out}/") for out in produced):
                    edges.add((producer, consumer))
    edges = {(a, b) for a, b in edges if not {a, b} & DVC_ONLY_STAGES}
    assert ("prepare", "preprocess") in edges  # the reading works
    assert edges == stage_edges()


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_NAMES)
def test_dvc_stage_runs_the_stage_contract_with_every_declared_option(stage) -> None:
    argv = shlex.split(DVC[stage.name]["cmd"])
    assert argv[:3] == ["python", "-m", stage.module]
    given = {argument[2:] for argument in argv[3:] if argument.startswith("--")}
    assert given == {option.name for option in stage.options}


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_NAMES)
def test_dvc_stage_reads_the_declared_params(stage) -> None:
    from_data = {option.source for option in stage.options if option.from_params}
    assert set(DVC[stage.name].get("params", [])) == set(stage.params) | from_data


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_NAMES)
def test_dvc_stage_depends_on_exactly_the_code_it_imports(stage) -> None:
    """Every file the stage reaches is under a code dep, and every code dep is reached."""
    code_deps = [d for d in dvc_paths(DVC[stage.name]["deps"]) if d.startswith("components/")]
    reached = import_closure(stage.name)
    uncovered = [
        str(path)
        for path in reached
        if path.name != "__init__.py" or path.parent != Path("components")
        if not any(str(path) == dep or str(path).startswith(f"{dep}/") for dep in code_deps)
    ]
    assert not uncovered, f"dvc.yaml {stage.name} misses deps for {sorted(uncovered)}"
    unused = [
        dep
        for dep in code_deps
        if not any(str(p) == dep or str(p).startswith(f"{dep}/") for p in reached)
    ]
    assert not unused, f"dvc.yaml {stage.name} depends on {unused}, which it never imports"


def test_no_stage_imports_another_stage() -> None:
    for stage in STAGES:
        others = {f"components/{name}" for name in STAGE_NAMES if name != stage.name}
        reached = {str(path) for path in import_closure(stage.name)}
        crossing = sorted(path for path in reached if any(path.startswith(o) for o in others))
        assert not crossing, f"{stage.name} imports {crossing}"


def test_each_image_has_its_pyproject_extra() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(IMAGES) == {*STAGE_NAMES, PIPELINE_IMAGE, SERVE_IMAGE, PREDICT_IMAGE}

    def own_extras(extra: str) -> set[str]:
        """The extras that ``extra`` pulls in: ``solarpipe[a,b]`` → {a, b}."""
        found = set()
        for requirement in extras[extra]:
            if requirement.startswith("solarpipe["):
                found |= set(requirement[len("solarpipe[") : -1].split(","))
        return found

    for image in IMAGES.values():
        assert image.extra in extras, f"pyproject.toml has no extra [{image.extra}]"
        if image.family == "light":
            assert "torch" not in own_extras(image.extra), f"{image.name} is light"
        else:
            assert "torch" in own_extras(image.extra), f"{image.name} is a torch image"


def test_stage_params_hold_only_the_declared_sections_and_keys() -> None:
    params = load_params(REPO / "params.yaml")
    detect = stage_params("detect", params)
    assert set(type(detect).model_fields) == {"detect", "prepare"}
    assert set(type(detect.prepare).model_fields) == {"nodata", "uint16_max"}
    assert detect.prepare.uint16_max == params.prepare.uint16_max
    with pytest.raises(AttributeError):
        detect.prepare.tile_size  # noqa: B018 - a key detect does not declare
    preprocess = stage_params("preprocess", params)
    assert preprocess.labelstudio.labels == params.labelstudio.labels
    assert preprocess.preprocess == params.preprocess
    for stage in STAGES:
        sections = stage_params(stage.name, params).model_dump()
        assert set(sections) == set(stage.params_sections) <= set(Params.model_fields)


def test_cluster_defaults_come_from_the_declaration() -> None:
    kubeflow = Params().kubeflow
    assert kubeflow.gpu.stages == [stage.name for stage in STAGES if stage.gpu]
    assert kubeflow.retry.stages == [stage.name for stage in STAGES if stage.retried]
    for stage in STAGES:
        resources = getattr(kubeflow.resources, stage.name)
        assert resources.cpu_limit == stage.resources.cpu_limit
        assert resources.memory_request == stage.resources.memory_request
