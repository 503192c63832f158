"""The package stays readable: no function of src/ over 90 lines."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "ssb"


def test_no_function_over_90_lines():
    long_functions = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 90:
                long_functions.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert long_functions == []
