"""The kernel-path interface (kernels/interface.py) and the activation table
(kernels/activation_table.py): every path is held to the Protocol's signatures, the generated
code is what the table makes, and every list about activations comes from the table."""

from __future__ import annotations

import ast
import inspect
import pathlib

import pytest

import gpunet
from gpunet import dispatch, nn
from gpunet.kernels import activation_table, generate
from gpunet.kernels.interface import OP_FUNCTIONS, KernelPath

KERNELS = pathlib.Path(generate.HERE)
PATH_FILES = {name: KERNELS / pkg / "path.py" for name, pkg in dispatch.PACKAGES.items()}


def _protocol_signature(fn_name: str) -> inspect.Signature:
    sig = inspect.signature(getattr(KernelPath, fn_name))
    return sig.replace(parameters=list(sig.parameters.values())[1:])  # without self


def _defined_functions(path_file: pathlib.Path) -> dict:
    """name -> ast.FunctionDef of the top-level functions a path's entry module defines, and the
    names it imports (its exports that come from its own modules)."""
    tree = ast.parse(path_file.read_text())
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    imported = {
        alias.asname or alias.name
        for n in tree.body
        if isinstance(n, ast.ImportFrom)
        for alias in n.names
    }
    return defs, imported, tree


@pytest.mark.parametrize("name", sorted(PATH_FILES))
def test_every_path_has_exactly_the_protocols_signatures(name):
    """Each function a path offers for its OPS has the Protocol's parameters and annotations (read
    from the source: the GPU paths cannot be imported without CuPy)."""
    defs, imported, _ = _defined_functions(PATH_FILES[name])
    for family in dispatch.PATH_OPS[name]:
        for fn_name in OP_FUNCTIONS[family]:
            assert fn_name in defs or fn_name in imported, f"path {name} lacks {fn_name}"
            if fn_name not in defs:
                continue
            want = _protocol_signature(fn_name)
            got = defs[fn_name].args
            names = [a.arg for a in got.args + got.kwonlyargs]
            if got.vararg:
                names.insert(len(got.args), "*" + got.vararg.arg)
            if got.kwarg:
                names.append("**" + got.kwarg.arg)
            expected = [
                ("*" if p.kind == p.VAR_POSITIONAL else "**" if p.kind == p.VAR_KEYWORD else "")
                + p.name
                for p in want.parameters.values()
            ]
            assert names == expected, f"{name}.{fn_name}: {names} != {expected}"


@pytest.mark.parametrize("name", ["numpy", "numba-cpu"])
def test_cpu_paths_conform_at_run_time(name):
    """The importable paths: every function of their OPS exists with the Protocol's signature,
    NAME and OPS are the dispatch's, and the complete path satisfies the whole Protocol."""
    module = dispatch.path_module(name)
    assert module.NAME == name
    assert module.OPS == dispatch.PATH_OPS[name]
    for family in module.OPS:
        for fn_name in OP_FUNCTIONS[family]:
            got = inspect.signature(getattr(module, fn_name))
            want = _protocol_signature(fn_name)
            assert list(got.parameters) == list(want.parameters), fn_name
    if name == "numpy":
        assert module.OPS == frozenset(OP_FUNCTIONS)
        for fn_name in (f for fns in OP_FUNCTIONS.values() for f in fns):
            assert callable(getattr(module, fn_name))


def test_complete_paths_run_every_operation():
    for name in ("numpy", "cupy"):
        assert dispatch.PATH_OPS[name] == frozenset(OP_FUNCTIONS)


@pytest.mark.parametrize("name", sorted(PATH_FILES))
def test_paths_import_no_other_path(name):
    """Paths share code only through kernels/shared (and the interface and table)."""
    others = {pkg for n, pkg in dispatch.PACKAGES.items() if n != name}
    folder = PATH_FILES[name].parent
    for source in folder.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
                assert node.module.split(".")[0] not in others, f"{source} imports {node.module}"


def test_generated_files_are_what_the_table_makes():
    assert generate.stale() == [], "run: python -m gpunet.kernels.generate"


def test_generated_vector_kernels_spell_every_name():
    """grep finds every RawKernel name a launch asks for."""
    text = (KERNELS / "cupy" / "vector_kernels.cuh").read_text()
    for a in activation_table.ACTIVATIONS:
        for d in ("fwd", "bwd"):
            for t in ("float", "double"):
                assert f" {generate.vector_kernel_name(a.name, d, t)}(" in text


def test_lists_come_from_the_table():
    names = set(activation_table.NAMES)
    assert set(nn.ACTIVATION_LAYERS) == names | {"prelu"}
    fused = {a.name for a in activation_table.ACTIVATIONS if a.fuses_with_batchnorm}
    assert set(activation_table.ACTIVATION_CODES) - {None} == fused
    assert {k for k in dispatch.AUTO_NUMBA_CPU if k in names} == {
        a.name for a in activation_table.ACTIVATIONS if a.cpu_min is not None
    }
    from gpunet.kernels.shared import activation_math

    for name in names:
        assert f"{name}_fwd" in activation_math.ORDER and f"{name}_bwd" in activation_math.ORDER


def test_gelu_tanh_reaches_the_cli_and_builds_its_layer():
    from gpunet.cli import build_parser

    args = build_parser().parse_args(["train", "--activation", "gelu_tanh"])
    assert args.activation == "gelu_tanh"
    layer = nn.ACTIVATION_LAYERS["gelu_tanh"]()
    assert isinstance(layer, nn.GELU) and layer.params == {"approximate": "tanh"}


def test_named_parameters_map_onto_the_kernels_scalars():
    assert activation_table.scalars("softplus", {"threshold": 5.0}) == (1.0, 5.0)
    assert activation_table.scalars("leaky_relu", {}) == (0.01, 0.0)
    with pytest.raises(TypeError, match="alpha"):
        activation_table.scalars("relu", {"alpha": 1.0})


def test_kernels_for_routes_every_accelerated_operation():
    import numpy

    x = numpy.ones((4, 4), numpy.float32)
    with gpunet.use_cpu_kernels("numba"):
        assert dispatch.path_name("matmul", x) == "numpy"  # not a Numba CPU op
        assert dispatch.path_name("prelu", x) == "numpy"
        assert dispatch.path_name("sgd", x, x) == "numba-cpu"
        assert dispatch.path_name("batchnorm+gelu", x) == "numba-cpu"
    with gpunet.use_cpu_kernels("numpy"):
        assert dispatch.path_name("adam", x, x) == "numpy"
