"""Packaging: every import is declared, one progress library, and the lock matches setup.cfg (issue 10)."""

from __future__ import annotations

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
OWN = {"amc_mobile", "android_harness"}


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _requirements(text: str) -> list[Requirement]:
    return [Requirement(line) for line in text.strip().splitlines() if line.strip() and not line.startswith("#")]


def _base_and_extras() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    cfg = _setup_cfg()
    base = _requirements(cfg["options"]["install_requires"])
    extras = {name: _requirements(value) for name, value in cfg["options.extras_require"].items()}
    return base, extras


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files importing it, over the installed packages' code."""
    found: dict[str, set[str]] = {}
    for pkg in OWN:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    base, extras = _base_and_extras()
    declared = {canonicalize_name(r.name) for r in base} | {canonicalize_name(r.name)
                                                           for reqs in extras.values() for r in reqs}
    dists = packages_distributions()
    missing = {}
    for module, files in _third_party_imports().items():
        names = {canonicalize_name(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported but not declared in setup.cfg: {missing}"


def test_one_progress_library_and_no_click() -> None:
    imports = _third_party_imports()
    assert "tqdm" not in imports, imports.get("tqdm")
    assert "click" not in imports, imports.get("click")  # typer >= 0.29 does not bring it


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_lock_leaves_torch_and_cuda_packages_out() -> None:
    pins = _lock()
    assert "torch" not in pins  # installed first from the CPU wheel: requirements/README.md
    assert not [name for name in pins if name.startswith("nvidia-") or name == "triton"]
    assert "# torch" in LOCK.read_text()


@pytest.mark.parametrize("extra", [None, "dev", "tflite", "ray"])
def test_lock_pins_every_declared_package_within_its_range(extra: str | None) -> None:
    base, extras = _base_and_extras()
    reqs = base if extra is None else extras[extra]
    pins = _lock()
    for req in reqs:
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in pins, f"{req.name} ({extra or 'base'}) is not in {LOCK.name}: run 'make lock'"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"lock pins {req.name}=={pins[name]} outside setup.cfg's '{req.specifier}': run 'make lock'")


def test_torch_range_admits_the_cpu_wheel_only_up_to_2_13() -> None:
    base, _ = _base_and_extras()
    torch_req = next(r for r in base if r.name == "torch")
    assert torch_req.specifier.contains("2.13.0") and not torch_req.specifier.contains("2.14.0")


def test_make_and_ci_install_through_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q $(TORCH_PIP_ARGS) torch==2.13.0" in makefile and "-c $(LOCK)" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make smoke" in ci and "user_install.sh" in ci and "mypy" in ci
    user = (ROOT / ".ci" / "user_install.sh").read_text()
    assert 'install -q -c "$work/src/requirements/lock.txt" "$work/src"' in user  # non-editable, no extras
    assert "torch==2.13.0" in user and "search --checkpoint zoo:mobilenet_v1-fmnist" in user
