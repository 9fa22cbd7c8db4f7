"""The house's shape: every import arrow between dinat_timm's modules points one way, including the
imports inside function bodies (a lazy import that closes a circle only hides it)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dinat_timm"


def _modules():
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name, path, modules):
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in modules else target)
    return {m for m in found if m in modules and m != name}


def _cycles(graph):
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circles_among_the_modules():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["dinat_timm.results.boards"] >= {"dinat_timm.results.leaderboard_md", "dinat_timm.results.scaling"}
    assert _cycles(graph) == []


def test_the_checker_sees_a_circle_hidden_in_a_function(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    modules = {"pkg.x": tmp_path / "x.py", "pkg.y": tmp_path / "y.py"}
    (tmp_path / "x.py").write_text("from .y import f\n")
    (tmp_path / "y.py").write_text("def f():\n    from .x import g\n")
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == [["pkg.x", "pkg.y"]]


# -- the measurement side's partition --------------------------------------------------------------------------


def _collections_of_columns(tree, columns):
    """Module- and class-level collections (lists, tuples, sets; items or their first elements) naming two or
    more results columns: definitions of a set of columns."""
    found = []
    bodies = [tree.body] + [node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    for body in bodies:
        for statement in body:
            if not isinstance(statement, (ast.Assign, ast.AnnAssign)) or statement.value is None:
                continue
            for node in ast.walk(statement.value):
                if not isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                    continue
                items = [e.elts[0] if isinstance(e, ast.Tuple) and e.elts else e for e in node.elts]
                named = [e.value for e in items if isinstance(e, ast.Constant) and e.value in columns]
                if len(named) >= 2:
                    found.append((statement.lineno, named))
    return found


def test_the_schema_is_the_one_place_a_set_of_columns_is_declared():
    """Every results column is declared once, in results/schema.py (with its type, unit, suites and role); no
    other module keeps its own list of columns (the writer's order, the identifying columns, compare's
    metrics, the label format, timm's file columns all read the schema)."""
    from dinat_timm.results import schema

    assert len(schema.BY_NAME) == len(schema.COLUMNS)  # each declared once
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "schema.py":
            continue
        found = _collections_of_columns(ast.parse(path.read_text()), set(schema.BY_NAME))
        if found:
            offenders[str(path.relative_to(PACKAGE))] = found
    assert offenders == {}


def test_the_checker_sees_a_column_list_kept_elsewhere():
    tree = ast.parse("ORDER = ['suite', 'model']\nclass A:\n    KEYS = (('device', 'x'), ('dtype', 'y'))\n"
                     "def f():\n    return ['suite', 'model']\n")
    assert _collections_of_columns(tree, {"suite", "model", "device", "dtype"}) == [
        (1, ["suite", "model"]), (3, ["device", "dtype"])]


def test_a_row_with_an_undeclared_column_is_refused_naming_it(tmp_path):
    import pytest

    from dinat_timm.results.writer import CsvWriteError, append_rows

    with pytest.raises(CsvWriteError, match="column\\(s\\) speed_of_light are not declared"):
        append_rows(tmp_path / "t.csv", [dict(suite="throughput", model="m", infer_samples_per_sec=1.0,
                                              speed_of_light=3e8)])
    assert not (tmp_path / "t.csv").exists()


def test_results_imports_nothing_that_needs_torch():
    """results/ works on CSV files with pandas alone: none of its modules imports torch, timm, or the parts of
    dinat_timm that do (the machine's description lives in bench/)."""
    modules = _modules()
    heavy = ("dinat_timm.ops", "dinat_timm.models", "dinat_timm.bench", "dinat_timm.gate", "dinat_timm.hub")
    for name, path in modules.items():
        if not name.startswith("dinat_timm.results"):
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        assert not {"torch", "timm", "torchvision"} & imported, name
        assert not {m for m in _imports(name, path, modules) if m.startswith(heavy)}, name


def test_the_results_command_runs_where_torch_cannot_be_imported(tmp_path):
    """compare, merge and boards on real CSVs in a process where ``import torch`` fails."""
    import subprocess
    import sys

    from dinat_timm.results.writer import append_rows

    row = dict(suite="throughput", status="ok", model="m", dtype="fp32", device="cpu (x)", infer_batch_size=8,
               infer_img_size=224, backend="auto:tiled")
    append_rows(tmp_path / "base.csv", [dict(row, infer_samples_per_sec=10.0)])
    append_rows(tmp_path / "new.csv", [dict(row, infer_samples_per_sec=5.0)])
    blocked = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['results'] + sys.argv[1:]; "
               "runpy.run_module('dinat_timm.results', run_name='__main__')")

    def results(*args):
        return subprocess.run([sys.executable, "-c", blocked, *map(str, args)], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)

    compared = results("compare", "base.csv", "new.csv")
    assert compared.returncode == 1 and "verdict: FAIL" in compared.stdout, compared.stderr
    merged = results("merge", "base.csv", "new.csv", "-o", "merged.csv")
    assert merged.returncode == 0 and (tmp_path / "merged.csv").exists(), merged.stderr
    (tmp_path / "board").mkdir()
    (tmp_path / "merged.csv").rename(tmp_path / "board" / "throughput.csv")
    boards = results("boards", "--results-dir", "board")
    assert boards.returncode == 0 and (tmp_path / "board" / "LEADERBOARD.md").exists(), boards.stderr
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import dinat_timm.results."
                            "boards, dinat_timm.results.compare; print('torch' in sys.modules and sys.modules['torch'])"],
                           capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "None", probe.stderr


def test_no_module_reaches_outside_the_package_for_a_folder():
    """A results folder is explicit or relative to the working directory: no module climbs from its own file
    to the checkout (``Path(__file__).parents[k]`` above the package), which an installed wheel does not have."""
    climbs = []
    for path in PACKAGE.rglob("*.py"):
        depth = len(path.relative_to(PACKAGE).parts) - 1  # parents[depth] is the package itself
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "parents" and isinstance(node.slice, ast.Constant)
                    and node.slice.value > depth):
                climbs.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert climbs == []


def test_the_gate_is_one_package():
    """The verdict rule, the two sides, the worker, the simulation and the command line live in dinat_timm/gate;
    the worker is a sibling file there (started by path: it must import the dinat_timm of the tree it times)."""
    from dinat_timm.gate import sides

    modules = _modules()
    assert {m for m in modules if "gate" in m.rsplit(".", 1)[-1] or ".gate." in m} == {
        "dinat_timm.gate", "dinat_timm.gate.__main__", "dinat_timm.gate.rule", "dinat_timm.gate.sides",
        "dinat_timm.gate.worker", "dinat_timm.gate.simulation", "dinat_timm.gate.report"}
    assert sides.WORKER.parent == Path(sides.__file__).parent and sides.WORKER.is_file()
    outside = {name for name, path in modules.items() if not name.startswith("dinat_timm.gate")
               and any(m.startswith("dinat_timm.gate") for m in _imports(name, path, modules))}
    assert outside == set()
