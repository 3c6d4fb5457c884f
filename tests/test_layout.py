"""The layout is the architecture: stages at the top import the fde library, never each other; the library
imports no stage and has no import cycle; torch is imported only where an image is touched."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in ROOT.glob("*.py"))
LIBRARY = sorted(f"fde.{p.stem}" for p in (ROOT / "fde").glob("*.py") if p.stem != "__init__")
TESTS = sorted(p.stem for p in (ROOT / "tests").glob("test_*.py"))
# Modules that embed images (or search by them) may import torch; nothing else may, not even lazily.
# fde.pretrained imports torch.hub lazily, only to download weights: a photo search uses that module and must
# not load torch (test_search.py::test_a_photo_search_imports_no_torch checks it).
TORCH_MODULES = {"fde.backbones", "fde.engines", "fde.pretrained", "fde.visual_index", "visual_features",
                 "visual_reccs"}


def imported(path: Path) -> set[str]:
    """Every module an import statement in the file names (module level and inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "fde":  # from fde import a, b
                names.update(f"fde.{alias.name}" for alias in node.names)
    return names


def source(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def test_the_layout_reads_like_the_pipeline():
    assert {"data_optim", "split_data", "visual_features", "visual_reccs", "individual_baseline", "ranker",
            "final", "sample_data", "app"} <= set(STAGES)
    grab_bags = {"common", "utils", "helpers", "misc"}
    assert not grab_bags & (set(STAGES) | {m.split(".")[1] for m in LIBRARY})


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage(stage):
    others = imported(source(stage)) & (set(STAGES) - {stage})
    assert not others, f"{stage}.py imports the stage(s) {sorted(others)}: move what it needs into fde/"


@pytest.mark.parametrize("module", LIBRARY)
def test_the_library_imports_no_stage(module):
    stages = imported(source(module)) & set(STAGES)
    assert not stages, f"{module} imports the stage(s) {sorted(stages)}"


def test_the_library_has_no_import_cycle():
    graph = {m: sorted(imported(source(m)) & set(LIBRARY)) for m in LIBRARY}
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = path[path.index(module):] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for dependency in graph[module]:
            visit(dependency)
        path.pop()
        done.add(module)

    for module in LIBRARY:
        visit(module)


@pytest.mark.parametrize("module", sorted((set(LIBRARY) | set(STAGES)) - TORCH_MODULES))
def test_torch_only_where_images_are_touched(module):
    torch = {name for name in imported(source(module)) if name == "torch" or name.startswith(("torch.", "torchvision"))}
    assert not torch, f"{module} imports {sorted(torch)}"


def test_scoring_and_the_app_load_without_torch():
    """final.py, ranker.py and the app's modules import nothing that pulls torch in (seconds at every start)."""
    code = ("import sys, final, ranker, launch, individual_baseline, fde.evaluation, fde.launch, fde.visual_index, "
            "fde.search, fde.pretrained; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("test", TESTS)
def test_test_modules_do_not_import_each_other(test):
    others = imported(ROOT / "tests" / f"{test}.py") & set(TESTS)
    assert not others, f"{test} imports {sorted(others)}: shared fixtures go in conftest.py, shared data in shop.py"
