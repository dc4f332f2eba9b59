"""Rewrite a problem's test code for the judge process, and extract the prompt's helpers.

Runs in the parent (pure AST work, cached per problem).  In the rewritten test:
* every comparison goes through ``__ieta_cmp__`` (chained comparisons evaluated once, left to right);
  the candidate's results arrive as plain data, so no operand has the candidate's methods;
* every ``assert`` goes through ``__ieta_assert__(idx, ...)``, which records a per-assert result;
  top-level asserts of ``check`` record and go on (per-assert counts), nested ones raise as usual.
"""

from __future__ import annotations

import ast
import marshal
from dataclasses import dataclass
from functools import lru_cache

CMP = "__ieta_cmp__"
ASSERT = "__ieta_assert__"


@dataclass(frozen=True)
class InstrumentedTest:
    code: bytes               # marshalled code object of the rewritten test, with program line numbers
    n_asserts: int            # static number of assert statements
    assert_src: tuple[str, ...]
    assert_lines: tuple[int, ...]  # program line of each assert
    modules: tuple[str, ...]  # top-level modules the test imports (restored before each assert)


def _lam(node: ast.expr) -> ast.Lambda:
    args = ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    return ast.Lambda(args=args, body=node)


_POS = ("lineno", "col_offset", "end_lineno", "end_col_offset")


def _located(new: ast.AST, old: ast.AST) -> ast.AST:
    """Give the nodes built for ``old`` its position (what ``ast.fix_missing_locations`` would do, without
    walking the whole tree again): only nodes without one, and not below nodes that have one."""
    todo = [new]
    while todo:
        node = todo.pop()
        if "lineno" in node._attributes and getattr(node, "lineno", None) is not None:
            continue
        for attr in _POS:
            if attr in node._attributes:
                setattr(node, attr, getattr(old, attr))
        todo.extend(ast.iter_child_nodes(node))
    return new


def _mentions(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


class _Rewriter(ast.NodeTransformer):
    def __init__(self, source: str):
        self.source = source
        self.src_lines = source.splitlines(keepends=True)
        self.asserts: list[str] = []
        self.lines: list[int] = []
        self.candidate = "candidate"
        self.top_level: set[int] = set()
        self.modules: set[str] = set()  # top-level modules the test imports

    def _segment(self, node: ast.AST) -> str:
        """``ast.get_source_segment`` without re-splitting the whole source for every assert."""
        lines = self.src_lines[node.lineno - 1:node.end_lineno]
        if not lines:
            return ""
        if len(lines) == 1:
            return lines[0].encode()[node.col_offset:node.end_col_offset].decode(errors="replace")
        first, last = lines[0].encode()[node.col_offset:].decode(errors="replace"), \
            lines[-1].encode()[:node.end_col_offset].decode(errors="replace")
        return first + "".join(lines[1:-1]) + last

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        if node.name == "check" and node.args.args:
            self.candidate = node.args.args[0].arg
            self.top_level = {id(s) for s in node.body if isinstance(s, ast.Assert)}
        return self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> ast.AST:
        self.modules |= {a.name.split(".")[0] for a in node.names}
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.module:
            self.modules.add(node.module.split(".")[0])
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        ops = ast.Tuple([ast.Constant(type(op).__name__) for op in node.ops], ast.Load())
        rest = [node.comparators[0]] + [_lam(c) for c in node.comparators[1:]]
        return _located(ast.Call(ast.Name(CMP, ast.Load()), [ops, node.left, *rest], []), node)

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        idx = len(self.asserts)
        self.asserts.append((self._segment(node) or ast.unparse(node))[:500])
        self.lines.append(node.lineno)
        test = node.test
        # a two-operand comparison keeps its operands, so the judge can report expected/actual
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            left, right = self.visit(test.left), self.visit(test.comparators[0])
            swap = _mentions(test.comparators[0], self.candidate) and not _mentions(test.left, self.candidate)
            kind = ast.Constant(type(test.ops[0]).__name__)
            thunk = _lam(ast.Tuple([left, right], ast.Load()))
            extra = [kind, ast.Constant(swap)]
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            thunk, extra = _lam(self.visit(test.operand)), [ast.Constant("Not"), ast.Constant(False)]
        else:
            thunk, extra = _lam(self.visit(test)), [ast.Constant(None), ast.Constant(False)]
        msg = _lam(self.visit(node.msg)) if node.msg is not None else ast.Constant(None)
        top = ast.Constant(id(node) in self.top_level)
        call = ast.Call(ast.Name(ASSERT, ast.Load()), [ast.Constant(idx), thunk, *extra, msg, top], [])
        return _located(ast.Expr(call), node)


def instrument_test(test_src: str, line_offset: int) -> InstrumentedTest:
    """Rewrite and compile ``test_src``; ``assert_lines`` are shifted by ``line_offset`` to match the program.

    The code itself keeps the test's own line numbers (one compile per test, whatever the completion);
    the judge adds ``line_offset`` to the lines of test frames it reports.
    """
    base = _instrument(test_src)
    return InstrumentedTest(base.code, base.n_asserts, base.assert_src,
                            tuple(n + line_offset for n in base.assert_lines), base.modules)


@lru_cache(maxsize=4096)
def _instrument(test_src: str) -> InstrumentedTest:
    tree = ast.parse(test_src)
    rw = _Rewriter(test_src)
    tree = rw.visit(tree)
    code = compile(tree, "<test>", "exec", dont_inherit=True)
    return InstrumentedTest(marshal.dumps(code), len(rw.asserts), tuple(rw.asserts), tuple(rw.lines),
                            tuple(sorted(rw.modules)))


@lru_cache(maxsize=4096)
def prompt_helpers(prompt: str, entry_point: str) -> bytes:
    """Marshalled code of the prompt without its entry point: imports and helpers the test may call.

    The judge runs it, so the test calls the problem's own helpers, never the candidate's versions.
    A prompt that ends in a bare signature is completed with ``pass`` to parse; one that still does
    not parse gives no helpers.
    """
    for src in (prompt, prompt.rstrip() + "\n    pass\n"):
        try:
            tree = ast.parse(src)
            break
        except SyntaxError:
            continue
    else:
        tree = ast.Module(body=[], type_ignores=[])
    tree.body = [n for n in tree.body if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                                              and n.name == entry_point)]
    return marshal.dumps(compile(tree, "<prompt>", "exec", dont_inherit=True))


def clear_caches() -> None:
    """Forget every instrumented test and prompt (a benchmark's fresh start)."""
    _instrument.cache_clear()
    prompt_helpers.cache_clear()
