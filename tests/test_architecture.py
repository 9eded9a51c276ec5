"""The import contract and the size limits of the code (issue #13), checked on every `make test`.

Layers, top to bottom — an import only goes down, or stays in its layer:

    6 entry          the commands that run the code location's jobs in-process (ENTRY below:
                     the CLI, hakobu.launch, the demo, `make dev`)
    5 pipelines/     the Dagster code location
    4 assets/        assets, checks, sensors
    3 app            the other entry points (APP below): verify_run, status, tonight, stop,
                     runs, run_launcher, localenv, grants.cli, reconcile — they may assemble
                     resources/
    2 resources/     the adapters: implement hakobu.ports, expose ConfigurableResources
    1 core           every other hakobu.* module (engine, planning, config, policy, types, ...)

Rules (each violation is reported as `file:line: ...`):
- `test_layers`: no import goes up a layer. Every import counts, at module top, inside a
  function or under `if TYPE_CHECKING:` (a type-only import of an adapter still ties the core
  to it). The core is "every hakobu module not in ENTRY or APP": a new core module is checked without
  being listed.
- `test_no_import_cycles`: no cycle in the module graph (strongly connected components), within
  or across layers, counting imports inside functions (an import hidden in a function to dodge
  a cycle is still a cycle); imports under `if TYPE_CHECKING:` do not count (they are how a
  type-only reference is made without a run-time dependency).
- `test_module_sizes`: no module over MAX_MODULE_LINES lines.
- `test_function_sizes`: no function or method over MAX_FUNCTION_LINES lines, counted from its
  `def` to its last line, its docstring left out. A function that must stay longer says why
  in a comment on the line right above its `def` (above its decorators, if any):

      # long: one SQL statement built in one piece; split, it reads worse

- `test_imports_at_top`: an import of the project (hakobu, resources, assets, pipelines)
  inside a function needs a reason on its line or the line above: `# late: <why>` (e.g. an
  optional dependency, or a module that is expensive to import and rarely needed).

Why grimp rather than import-linter's own contracts: import-linter's `layers` contract refuses
a layer that contains another ("hakobu" cannot be the core layer while "hakobu.cli" sits
above it), so the core would have to be listed module by module and a new core module would go
unchecked; and its cycle contract (`acyclic_siblings`) sees cycles between the siblings of one
package only. grimp is the graph library import-linter is built on (same parser, same graph).

Run it alone, with the full report of today's violations:

    PYTHONPATH=. .venv/bin/python tests/test_architecture.py      # or: make contract
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hakobu", "resources", "assets", "pipelines")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_MARKER = "# long:"
LATE_MARKER = "# late:"

# The composition roots: the commands that run the code location's jobs in-process (`hakobu
# load`, `backfill`, `demo`, `make dev`) sit above it, as a deployment does.
ENTRY = ("hakobu.cli", "hakobu.launch", "hakobu.demo", "hakobu.localenv.dev")
APP = ("hakobu.verify_run", "hakobu.status", "hakobu.tonight", "hakobu.stop", "hakobu.runs",
       "hakobu.run_launcher", "hakobu.localenv", "hakobu.grants.cli", "hakobu.reconcile",
       "hakobu.stream", "hakobu.stream_generations")
LAYERS = {6: "entry", 5: "pipelines", 4: "assets", 3: "app", 2: "resources", 1: "core"}

# While issue #13 is being worked on in several branches, main holds code these tests refuse:
# True marks them xfail (not strict), so main stays green and `pytest -rx` still lists them.
# The lead sets it to False when the last branch of #13 is merged; from then on they fail.
UNTIL_MERGED = False
pending = pytest.mark.xfail(UNTIL_MERGED, reason="issue #13 in progress (tests/test_architecture"
                                                 ".py UNTIL_MERGED)", strict=False)


def layer(module: str) -> int:
    top = module.split(".")[0]
    if any(module == a or module.startswith(a + ".") for a in ENTRY):
        return 6
    if top == "pipelines":
        return 5
    if top == "assets":
        return 4
    if any(module == a or module.startswith(a + ".") for a in APP):
        return 3
    if top == "resources":
        return 2
    return 1


@cache
def graph(type_checking: bool):
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=not type_checking,
                             cache_dir=None)


def where(module: str, line: int | None = None) -> str:
    """`path:line` of a module (a package: its __init__.py)."""
    base = ROOT / Path(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    rel = path.relative_to(ROOT)
    return f"{rel}:{line}" if line is not None else str(rel)


def imports(g, importer: str, imported: str) -> list[tuple[int, str]]:
    return sorted((d["line_number"], d["line_contents"].strip())
                  for d in g.get_import_details(importer=importer, imported=imported))


# -- the import contract ---------------------------------------------------------------------

def layer_violations() -> list[str]:
    g = graph(type_checking=True)
    out = []
    for importer in sorted(g.modules):
        for imported in sorted(g.find_modules_directly_imported_by(importer)):
            if layer(imported) > layer(importer):
                for line, text in imports(g, importer, imported):
                    out.append(f"{where(importer, line)}: {LAYERS[layer(importer)]} module "
                               f"{importer} imports {LAYERS[layer(imported)]} module "
                               f"{imported}: {text}")
    return by_place(out)


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module (and a module
    importing itself), each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1 or node in edges.get(node, ()):
                    found.append(sorted(comp))
    return sorted(found)


def cycle_violations() -> list[str]:
    g = graph(type_checking=False)
    nodes = sorted(g.modules)
    edges = {m: set(g.find_modules_directly_imported_by(m)) for m in nodes}
    out = []
    for comp in strongly_connected(nodes, edges):
        members = set(comp)
        lines = [f"  {where(a, line)}: {a} → {b}: {text}"
                 for a in comp for b in sorted(edges[a] & members)
                 for line, text in imports(g, a, b)]
        out.append(f"import cycle through {len(comp)} modules ({', '.join(comp)}):\n"
                   + "\n".join(lines))
    return out


# -- sizes and imports inside functions (ast) --------------------------------------------------

def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@cache
def parsed(path: Path) -> tuple[list[str], ast.Module]:
    text = path.read_text(encoding="utf-8")
    return text.splitlines(), ast.parse(text, filename=str(path))


def module_size_violations() -> list[str]:
    out = []
    for path in source_files():
        n = len(parsed(path)[0])
        if n > MAX_MODULE_LINES:
            out.append(f"{path.relative_to(ROOT)}:1: {n} lines (at most {MAX_MODULE_LINES})")
    return out


def function_length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    total = node.end_lineno - node.lineno + 1
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        total -= body[0].end_lineno - body[0].lineno + 1
    return total


def marked(lines: list[str], node) -> bool:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return first >= 2 and lines[first - 2].strip().startswith(LONG_MARKER)


def function_size_violations() -> list[str]:
    out = []
    for path in source_files():
        lines, tree = parsed(path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = function_length(node)
                if n > MAX_FUNCTION_LINES and not marked(lines, node):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}() is {n} "
                               f"lines (at most {MAX_FUNCTION_LINES}, or `{LONG_MARKER} <why>` "
                               "on the line above its def)")
    return by_place(out)


def _project_module(node: ast.Import | ast.ImportFrom) -> str | None:
    if isinstance(node, ast.ImportFrom):
        names = [node.module or ""] if node.level == 0 else ["."]
    else:
        names = [a.name for a in node.names]
    for name in names:
        if name == "." or name.split(".")[0] in PACKAGES:
            return name
    return None


def _imports_in_functions(tree: ast.Module):
    """(innermost function, import node) for every import inside a function."""
    def visit(node, fn):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(child, child)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                if fn is not None:
                    yield fn, child
            else:
                yield from visit(child, fn)
    yield from visit(tree, None)


def late_import_violations() -> list[str]:
    out = []
    for path in source_files():
        lines, tree = parsed(path)
        for fn, node in _imports_in_functions(tree):
            if _project_module(node) is None:
                continue
            here = lines[node.lineno - 1]
            above = lines[node.lineno - 2] if node.lineno >= 2 else ""
            if LATE_MARKER in here or above.strip().startswith(LATE_MARKER):
                continue
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: import inside {fn.name}(): "
                       f"{here.strip()} (move it to the top, or `{LATE_MARKER} <why>`)")
    return by_place(out)


def by_place(violations: list[str]) -> list[str]:
    """Sorted by file, then line number (not as text: line 62 before line 233)."""
    def key(v: str):
        path, _, rest = v.partition(":")
        line = rest.split(":", 1)[0]
        return path, int(line) if line.isdigit() else 0, v
    return sorted(violations, key=key)


# -- the tests --------------------------------------------------------------------------------

def report(what: str, violations: list[str]) -> str:
    return f"{len(violations)} {what}:\n" + "\n".join(violations)


@pending
def test_layers():
    found = layer_violations()
    assert not found, report("imports up the layers", found)


@pending
def test_no_import_cycles():
    found = cycle_violations()
    assert not found, report("import cycles", found)


@pending
def test_module_sizes():
    found = module_size_violations()
    assert not found, report(f"modules over {MAX_MODULE_LINES} lines", found)


@pending
def test_function_sizes():
    found = function_size_violations()
    assert not found, report(f"functions over {MAX_FUNCTION_LINES} lines", found)


@pending
def test_imports_at_top():
    found = late_import_violations()
    assert not found, report("project imports inside functions", found)


def test_the_checks_see_what_they_must():
    """The contract itself: the layers are where the plan says, and a cycle is found."""
    assert layer("hakobu.cli") > layer("pipelines.definitions") > layer("assets.customer") \
        > layer("hakobu.verify_run") > layer("resources.io") > layer("hakobu.sync")
    assert layer("hakobu.localenv.mariadb") == layer("hakobu.grants.cli") == 3
    assert layer("hakobu.grants.apply") == layer("hakobu") == 1
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert strongly_connected(sorted(edges), edges) == [["a", "b", "c"], ["e"]]
    tree = ast.parse("def f():\n    '''doc\n    more'''\n    x = 1\n    return x\n")
    assert function_length(tree.body[0]) == 3
    assert "hakobu.config" in graph(type_checking=False).modules


if __name__ == "__main__":
    sections = [("imports up the layers", layer_violations()),
                ("import cycles", cycle_violations()),
                (f"modules over {MAX_MODULE_LINES} lines", module_size_violations()),
                (f"functions over {MAX_FUNCTION_LINES} lines", function_size_violations()),
                ("project imports inside functions", late_import_violations())]
    for what, found in sections:
        print(report(what, found) if found else f"0 {what}", end="\n\n")
    sys.exit(1 if any(found for _, found in sections) else 0)
