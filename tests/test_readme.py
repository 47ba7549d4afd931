"""README.md's code runs: every ```python block, in order, in one shared namespace (like a notebook), and
doctest on its ``>>>`` examples.

A block preceded by a ``<!-- no-test -->`` line is skipped (for one that needs a GPU, say). Blocks run in a
temporary working directory, so files they write (``grid.png``, checkpoints) land there, and the operator
and method registries are restored afterwards, so names the README registers do not leak into other tests.
"""
from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NO_TEST = "<!-- no-test -->"


def python_blocks(text: str):
    """(first line number, code, skipped) for every ```python block of ``text``."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        blocks.append((text.count("\n", 0, m.start()) + 2, m.group(1), before == NO_TEST))
    return blocks


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working directory, one torch thread, and the registries as they were."""
    import torch

    import operators.registry as op_registry
    from invscore.conditional import METHODS

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    # one thread: on a busy machine, OpenMP threads that outnumber the free cores spin against each other
    torch.set_num_threads(1)
    ops, methods = dict(op_registry._REGISTRY), dict(METHODS)
    try:
        yield tmp_path
    finally:
        torch.set_num_threads(threads)
        op_registry._REGISTRY.clear()
        op_registry._REGISTRY.update(ops)
        METHODS.clear()
        METHODS.update(methods)


def test_readme_has_python_blocks():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 4 and not all(skip for _, _, skip in blocks)


def test_readme_python_blocks_run(sandbox):
    """The blocks share one namespace. A failing block does not stop the later ones (they may not need
    it); the failure report names each failing block by its first line in README.md."""
    import traceback

    namespace = {"__name__": "readme"}
    failures, ran = [], 0
    for line, code, skip in python_blocks(README.read_text(encoding="utf-8")):
        if skip:
            continue
        ran += 1
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception:  # noqa: BLE001 - collected and reported below
            failures.append(f"README.md block at line {line}:\n{traceback.format_exc(limit=-3)}")
    assert ran > 0
    assert not failures, "\n".join(failures)
    assert (sandbox / "grid.png").exists()


def test_readme_doctests(sandbox):
    res = doctest.testfile(str(README), module_relative=False, encoding="utf-8",
                           optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0, res
