"""The import layers of auras, written down and checked: no upward import, no import cycle, and no
function-local import of an auras module unless it keeps a heavy library out of a light import.

Every run-time import of an auras module counts: module level and inside functions alike; imports under
``if TYPE_CHECKING:`` do not (they exist only for annotations). The modules are read with ``ast``; nothing
is imported. Importing ``a.b.c`` also runs the ``__init__`` of the packages ``a.b`` above it, so those
count as imported too (marked "via the package of ...").
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The source folder of each package name (pyproject.toml [tool.setuptools] package-dir: envs/ installs as auras.envs).
SOURCES = {"auras": ROOT / "auras", "auras.envs": ROOT / "envs"}

# The layers, lowest first. A module may import modules of its own layer or a lower one, never a higher one.
# An entry stands for that module and everything under it; the longest matching entry wins.
LAYERS: Sequence[tuple[str, tuple[str, ...]]] = (
    # 0 base: data types, errors, configuration, the registries, device and partition arithmetic, and the
    #   pure-Python task catalogue, the compiled-stage wrapper (torch only inside it); no models, no simulators.
    (
        "base",
        (
            "auras.types",
            "auras.errors",
            "auras.config",
            "auras.registry",
            "auras.devices",
            "auras.compiled",
            "auras.partition",
            "auras.tasks",
            "auras.staleness",
            "auras.clock",
        ),
    ),
    # 1 parts: the models (perception, generation), the public context, demonstration data, and the task
    #   environments (simulator wrappers and scripted experts); none knows of another's layer above base.
    ("parts", ("auras.perception", "auras.generation", "auras.context", "auras.data", "auras.envs")),
    # 2 policies: perception + generation pairs, built by name.
    ("policies", ("auras.policies",)),
    # 3 pipeline: the executors that schedule a policy's parts (local threads or Ray actors).
    ("pipeline", ("auras.pipeline",)),
    # 4 agent: the public API over an executor (AurasAgent), its streaming front and the robot side of a real-time loop.
    ("agent", ("auras.agent", "auras.stream", "auras.robot_loop")),
    # 5 applications: built on the agent: the benchmark, the robot bridge, training.
    ("applications", ("auras.bench", "auras.bridge", "auras.training")),
    # 6 cli: the `auras` command.
    ("cli", ("auras.cli",)),
)
# The package face auras/__init__.py re-exports lazily (importlib, on attribute access): in no layer, not checked,
# and importing it is not an import of anything above.
EXEMPT = frozenset({"auras"})

# A function-local import of an auras module is kept only where its target loads one of these at import time
# (its own module-level imports, or those of the auras modules it imports at module level, transitively).
HEAVY = frozenset(
    {
        "torch", "ray", "mujoco", "transformers", "diffusers", "metaworld",
        "zarr", "cv2", "zmq", "matplotlib", "gymnasium",
    }
)
# Importers that must stay cheaper still: for their function-local imports these libraries count as heavy too.
# auras.cli (and its modules): `auras --help` loads no numpy (numpy alone is most of the cost of importing auras.cli).
CHEAP = {"auras.cli": frozenset({"numpy"})}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    where: str  # file:line
    local: bool  # inside a function
    via: str = ""  # for an implicit import of a package: the module whose import runs it


def discover(sources: Mapping[str, Path]) -> dict[str, Module]:
    """Every module under the source folders, by its dotted name; a folder nested in another's tree is skipped
    there (it has its own entry)."""
    modules: dict[str, Module] = {}
    own = {path.resolve() for path in sources.values()}
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if any(parent.resolve() in own for parent in list(path.parents)[: len(rel.parts) - 1]):
                continue
            parts = [package, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = Module(".".join(parts), path, ast.parse(path.read_text(), str(path)))
    return modules


def _type_checking(test: ast.expr) -> bool:
    return ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _statements(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """(import statement, inside a function) for every import that runs; ``if TYPE_CHECKING:`` bodies do not."""

    def walk(nodes: Iterable[ast.AST], local: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, local
            elif isinstance(node, ast.If) and _type_checking(node.test):
                yield from walk(node.orelse, local)
            elif isinstance(node, ast.stmt | ast.excepthandler | ast.match_case):  # expressions hold no import
                inner = local or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                yield from walk(ast.iter_child_nodes(node), inner)

    return walk(tree.body, False)


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.name.split(".")
    base = parts if module.is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _resolve(name: str, modules: Mapping[str, Module]) -> str | None:
    """The module that ``name`` (a module or a name inside one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _reexports(package: Module, modules: Mapping[str, Module]) -> dict[str, str]:
    """Names a package's __init__ imports at module level from an auras module: name -> that module."""
    found = {}
    for node, local in _statements(package.tree):
        if isinstance(node, ast.ImportFrom) and not local:
            source = _resolve(_absolute(package, node), modules)
            if source and source != package.name:
                for alias in node.names:
                    found[alias.asname or alias.name] = source
    return found


def _explicit(module: Module, modules: Mapping[str, Module]) -> Iterator[tuple[str, ast.stmt, bool]]:
    """(target module, statement, local) for each auras module an import statement names. ``from P import x``
    where ``x`` is a submodule of P targets it; where P's __init__ only re-exports ``x`` from a submodule, that
    submodule (P itself still runs: see the implicit package imports in ``imports_of``)."""
    roots = {name.split(".")[0] for name in modules}
    for node, local in _statements(module.tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _absolute(module, node)
            targets = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    targets.append(sub)
                elif base in modules and modules[base].is_package:
                    targets.append(_reexports(modules[base], modules).get(alias.name, base))
                else:
                    targets.append(base)
        for target in targets:
            if target.split(".")[0] not in roots:
                continue
            resolved = _resolve(target, modules)
            if resolved and resolved != module.name:
                yield resolved, node, local


def imports_of(module: Module, modules: Mapping[str, Module], root: Path = ROOT) -> list[Import]:
    """Every run-time import of an auras module by ``module``, the packages each one runs included."""
    try:
        where = module.path.relative_to(root)
    except ValueError:
        where = module.path
    found: dict[tuple[str, str], Import] = {}  # one per statement and module it loads
    own = set(_ancestors(module.name))
    for target, node, local in _explicit(module, modules):
        at = f"{where}:{node.lineno}"
        found.setdefault((at, target), Import(module.name, target, at, local))
        for package in _ancestors(target):
            if package in modules and package not in own and package != module.name:
                found.setdefault((at, package), Import(module.name, package, at, local, via=target))
    return sorted(found.values(), key=lambda imp: (int(imp.where.rpartition(":")[2]), imp.target))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def layer_of(name: str, layers: Sequence[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    return best


def layer_problems(
    modules: Mapping[str, Module],
    imports: Iterable[Import],
    layers: Sequence[tuple[str, tuple[str, ...]]] = LAYERS,
    exempt: frozenset[str] = EXEMPT,
) -> list[str]:
    """Modules in no layer, and every import of a higher layer: "importer (layer) -> imported (layer)"."""
    problems = [f"{name} is in no layer (add it to LAYERS)" for name in modules if name not in exempt
                and layer_of(name, layers) is None]

    def label(name: str) -> str:
        index = layer_of(name, layers)
        return f"{name} ({layers[index][0]})" if index is not None else f"{name} (no layer)"

    for imp in imports:
        if imp.importer in exempt or imp.target in exempt:
            continue
        low, high = layer_of(imp.importer, layers), layer_of(imp.target, layers)
        if low is not None and high is not None and high > low:
            how = f"{imp.where}, {'in a function' if imp.local else 'module level'}"
            how += f", via the package of {imp.via}" if imp.via else ""
            problems.append(f"{label(imp.importer)} -> {label(imp.target)}  [{how}]")
    return problems


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def import_graph(imports: Iterable[Import], exempt: frozenset[str] = EXEMPT) -> dict[str, set[str]]:
    """Importer -> imported, from the import statements alone: a package running when its submodule is imported
    is no edge (else every package and its re-exported children would be a cycle). ``from P import x`` where P
    re-exports x already points at x's own module (see ``_explicit``)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.via and imp.importer not in exempt and imp.target not in exempt:
            graph.setdefault(imp.importer, set()).add(imp.target)
    return graph


def _loads(modules: Mapping[str, Module], imports: Iterable[Import]) -> dict[str, dict[str, str]]:
    """Module -> every auras module importing it loads (itself included), each with the chain that loads it
    ("auras.a -> auras.b"): its module-level imports, transitively, and the packages above each."""
    deps: dict[str, list[str]] = {name: [p for p in _ancestors(name) if p in modules] for name in modules}
    for imp in imports:
        if not imp.local:
            deps[imp.importer].append(imp.target)
    loads = {}
    for name in modules:
        chain = {name: name}
        queue = [name]
        for current in queue:  # breadth first: the shortest chain
            for dep in deps[current]:
                if dep not in chain:
                    chain[dep] = f"{chain[current]} -> {dep}"
                    queue.append(dep)
        loads[name] = chain
    return loads


def heavy_reasons(
    modules: Mapping[str, Module], imports: Iterable[Import], heavy: frozenset[str] = HEAVY
) -> dict[str, str]:
    """Module -> why importing it loads a heavy library ("auras.a -> auras.b -> torch"); light modules absent."""
    roots = {name.split(".")[0] for name in modules}
    external: dict[str, list[str]] = {}
    for name, module in modules.items():
        found = set()
        for node, local in _statements(module.tree):
            if not local and not (isinstance(node, ast.ImportFrom) and node.level):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found.update(n.split(".")[0] for n in names)
        external[name] = sorted((found - roots) & heavy)
    reasons = {}
    for name, chain in _loads(modules, imports).items():
        culprit = next((dep for dep in chain if external[dep]), None)  # dicts keep the breadth-first order
        if culprit is not None:
            reasons[name] = f"{chain[culprit]} -> {external[culprit][0]}"
    return reasons


def needless_local_imports(
    modules: Mapping[str, Module],
    imports: Sequence[Import],
    heavy: frozenset[str] = HEAVY,
    cheap: Mapping[str, frozenset[str]] = CHEAP,
    exempt: frozenset[str] = EXEMPT,
) -> list[str]:
    """Function-local imports of auras modules that keep nothing heavy out: their target loads no heavy library
    (``heavy``, plus ``cheap[importer]``), or the importer loads the target at module level anyway."""
    loads = _loads(modules, imports)
    reasons = {extra: heavy_reasons(modules, imports, heavy | extra) for extra in {frozenset(), *cheap.values()}}
    needless = []
    for imp in imports:
        if not imp.local or imp.via or imp.target in exempt:
            continue
        if imp.target not in reasons[_cheap_for(imp.importer, cheap)]:
            needless.append(f"{imp.where}: {imp.importer} imports {imp.target} in a function; it loads nothing heavy")
        elif imp.target in loads[imp.importer]:
            needless.append(f"{imp.where}: {imp.importer} imports {imp.target} in a function; it is loaded at "
                            f"module level anyway ({loads[imp.importer][imp.target]})")
    return needless


def _cheap_for(importer: str, cheap: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The extra heavy libraries of ``importer``: its entry in ``cheap`` or that of a package above it."""
    for name, extra in cheap.items():
        if importer == name or importer.startswith(name + "."):
            return extra
    return frozenset()


def _analyse(sources: Mapping[str, Path], root: Path = ROOT) -> tuple[dict[str, Module], list[Import]]:
    modules = discover(sources)
    imports = [imp for module in modules.values() for imp in imports_of(module, modules, root)]
    return modules, imports


@functools.cache
def _tree() -> tuple[dict[str, Module], list[Import]]:
    """The analysis of this checkout, shared by the checks."""
    return _analyse(SOURCES)


# ---------------------------------------------------------------------------------------------------- the checks


def test_no_upward_import():
    modules, imports = _tree()
    assert "auras.envs.base" in modules and "auras.cli" in modules  # the walk found the tree
    problems = layer_problems(modules, imports)
    assert not problems, "imports against the layers (see LAYERS in tests/test_layers.py):\n" + "\n".join(problems)


def test_no_import_cycle():
    _, imports = _tree()
    found = cycles(import_graph(imports))
    assert not found, "import cycles among auras modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_function_local_imports_only_keep_heavy_modules_out():
    modules, imports = _tree()
    needless = needless_local_imports(modules, imports)
    assert not needless, (
        "function-local imports of auras modules that keep nothing heavy out (make them module imports):\n"
        + "\n".join(needless)
    )


def test_the_checks_can_fail(tmp_path: Path):
    """A synthetic tree with one upward import, one cycle and one needless local import: all three are reported,
    and what must not count (TYPE_CHECKING imports, a local import of a heavy module) is not."""
    files = {
        "__init__.py": "",
        "types.py": "import numpy\nfrom auras.errors import E\n",
        "errors.py": "import auras.types\nE = 1\n",  # types <-> errors: a cycle
        "partition.py": "from auras.agent import A\n",  # base -> agent: upward
        "agent.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from auras.cli import C\n"  # annotations only: no import
            "A = 1\n"
            "def f():\n    from auras.types import T\n"  # local, light: needless
            "def g():\n    from auras.devices import D\n"  # local, heavy target: kept
        ),
        "stream.py": "def f():\n    from auras.types import T\n",  # local, light, but numpy is heavy for stream
        "devices.py": "import torch\n",
        "cli.py": "from auras import agent\nC = 1\n",
        "config.py": "from auras.envs.base import TASKS\n",  # base -> parts, and the package auras.envs (parts)
        "envs/__init__.py": "import gymnasium\nfrom auras.tasks import TASKS\n",
        "envs/base.py": "TASKS = {}\n",
        "tasks.py": "TASKS = {}\n",
    }
    (tmp_path / "auras" / "envs").mkdir(parents=True)
    for name, text in files.items():
        (tmp_path / "auras" / name).write_text(text)
    modules, imports = _analyse({"auras": tmp_path / "auras"}, tmp_path)

    assert layer_problems(modules, imports) == [
        "auras.config (base) -> auras.envs (parts)  [auras/config.py:1, module level, via the package of "
        "auras.envs.base]",
        "auras.config (base) -> auras.envs.base (parts)  [auras/config.py:1, module level]",
        "auras.partition (base) -> auras.agent (agent)  [auras/partition.py:1, module level]",
    ]
    assert cycles(import_graph(imports)) == [["auras.errors", "auras.types"]]
    assert needless_local_imports(modules, imports, cheap={"auras.stream": frozenset({"numpy"})}) == [
        "auras/agent.py:6: auras.agent imports auras.types in a function; it loads nothing heavy"
    ]
    assert heavy_reasons(modules, imports)["auras.config"] == "auras.config -> auras.envs -> gymnasium"
    assert layer_of("auras.tasks") == 0 and layer_of("auras.envs.base") == 1
