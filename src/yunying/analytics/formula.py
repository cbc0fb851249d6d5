"""Formulas between trends series: ``B / A * 100``, ``(A + B) / 2``, ``-A``.

Grammar (a safe subset of arithmetic, parsed by hand, never ``eval``)::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := ("+" | "-") factor | NUMBER | LETTER | "(" expr ")"

A LETTER names a series by position (A is the first series, B the second …; case-insensitive).
A NUMBER is digits with an optional decimal point. Anything else is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yunying.analytics.common import InvalidQuery

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|([A-Za-z])|([-+*/()]))")
MAX_LENGTH = 500


@dataclass(frozen=True)
class Num:
    """A number literal."""

    value: float


@dataclass(frozen=True)
class Ref:
    """A series, by 0-based position."""

    index: int


@dataclass(frozen=True)
class Neg:
    """Unary minus."""

    operand: Node


@dataclass(frozen=True)
class BinOp:
    """``left op right`` with op one of ``+ - * /``."""

    op: str
    left: Node
    right: Node


Node = Num | Ref | Neg | BinOp


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InvalidQuery(f"formula: unexpected {text[pos:].strip()[:10]!r} at {pos}")
        number, letter, op = m.groups()
        if number is not None:
            out.append(("num", number))
        elif letter is not None:
            out.append(("ref", letter.upper()))
        else:
            out.append(("op", op))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise InvalidQuery("formula: unexpected end")
        self.i += 1
        return tok

    def expr(self) -> Node:
        node = self.term()
        while (tok := self.peek()) is not None and tok in (("op", "+"), ("op", "-")):
            self.i += 1
            node = BinOp(tok[1], node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while (tok := self.peek()) is not None and tok in (("op", "*"), ("op", "/")):
            self.i += 1
            node = BinOp(tok[1], node, self.factor())
        return node

    def factor(self) -> Node:
        kind, text = self.take()
        if kind == "num":
            return Num(float(text))
        if kind == "ref":
            return Ref(ord(text) - ord("A"))
        if text == "-":
            return Neg(self.factor())
        if text == "+":
            return self.factor()
        if text == "(":
            node = self.expr()
            if self.take() != ("op", ")"):
                raise InvalidQuery("formula: expected ')'")
            return node
        raise InvalidQuery(f"formula: unexpected {text!r}")


def parse(text: str) -> Node:
    """The syntax tree of a formula, or :class:`InvalidQuery`."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidQuery("formula must be a non-empty text such as 'B / A * 100'")
    if len(text) > MAX_LENGTH:
        raise InvalidQuery(f"formula longer than {MAX_LENGTH} characters")
    parser = _Parser(_tokens(text))
    node = parser.expr()
    if parser.peek() is not None:
        raise InvalidQuery(f"formula: unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return node


def refs(node: Node) -> set[int]:
    """The series positions a formula uses."""
    if isinstance(node, Ref):
        return {node.index}
    if isinstance(node, Neg):
        return refs(node.operand)
    if isinstance(node, BinOp):
        return refs(node.left) | refs(node.right)
    return set()


def evaluate(node: Node, values: list[float | int | None]) -> float | None:
    """The formula's value; None when a series value is None or on division by zero."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Ref):
        v = values[node.index]
        return None if v is None else float(v)
    if isinstance(node, Neg):
        v = evaluate(node.operand, values)
        return None if v is None else -v
    left, right = evaluate(node.left, values), evaluate(node.right, values)
    if left is None or right is None:
        return None
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    return None if right == 0 else left / right
