"""The package's import graph: no import circle anywhere in src/ (module-level and in-function imports alike), and the
report reads run folders without importing the code that runs the stages."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_names() -> dict[str, Path]:
    names = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """{module: the ssb modules it imports}, from every import statement of its source (wherever it stands)."""
    modules = module_names()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                imported = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            graph[name].update(i for i in imported if i in modules and i != name and not name.startswith(i + "."))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_src():
    graph = import_graph()
    assert "ssb.report" in graph and "ssb.runfolder.folder" in graph["ssb.distillation"]  # the graph sees the package
    assert cycles(graph) == []


def test_the_report_imports_no_orchestration():
    orchestration = {"ssb.run", "ssb.pipeline", "ssb.rounds", "ssb.rollouts", "ssb.refinement", "ssb.teacher_targets", "ssb.distillation",
                     "ssb.training_loop", "ssb.arms.grpo", "ssb.evaluation", "ssb.runfolder.folder"}
    graph = import_graph()
    for report in ("ssb.report", "ssb.report.rounds"):
        assert reachable(graph, report) & orchestration == set(), report


def outside(graph: dict[str, set[str]], package: str) -> set[str]:
    """The ssb modules outside ``package`` that its modules import."""
    return {i for m, deps in graph.items() if m == package or m.startswith(package + ".") for i in deps
            if i != package and not i.startswith(package + ".")}


def test_each_subpackage_imports_only_what_its_docstring_allows():
    graph = import_graph()
    assert outside(graph, "ssb.stats") <= {"ssb.config", "ssb.grading"}
    runners = {"ssb.rollouts", "ssb.refinement", "ssb.teacher_targets", "ssb.distillation", "ssb.training_loop", "ssb.pipeline",
               "ssb.rounds", "ssb.run", "ssb.cli"}
    assert not {i for i in outside(graph, "ssb.runfolder") if i in runners or i.startswith(("ssb.report", "ssb.arms"))}
    assert not {i for i in outside(graph, "ssb.report") if i.startswith("ssb.arms")}
    assert not {i for i in outside(graph, "ssb.arms") if i.startswith("ssb.report")}


def test_at_most_30_modules_at_the_top():
    top = [p for p in (SRC / "ssb").glob("*.py")]
    assert len(top) <= 30, sorted(p.name for p in top)
