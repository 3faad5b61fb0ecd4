"""Values and reasons rendered into generated files can never become code."""

from __future__ import annotations

import ast
import datetime
import decimal
import math
import re
from enum import IntEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from djdeploy.pyliteral import COMMENT_MAX_LENGTH, comment_text, python_literal

# Every node a rendered "x = <literal>" may contain: no Call, Name load, Attribute, BinOp...
ALLOWED_NODES = (
    ast.Module, ast.Assign, ast.Name, ast.Store, ast.Load,
    ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.UnaryOp, ast.USub,
)  # fmt: skip
# PEP 263's declaration pattern, as the tokenizer applies it to lines 1 and 2.
PEP263 = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")

hostile_text = st.one_of(
    st.text(),
    st.sampled_from(
        [
            "__import__('os')",
            "__import__('os').system('id')",
            "'); import os; ('",
            '"""; import os; """',
            "\\",
            "\\'",
            "line\nbreak",
            "\r\n",
            "\x00",
            "\u2028",
            "\u202e",
            "{0}",
            "%s",
        ]
    ),
)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text,
    lambda children: st.lists(children, max_size=4)
    | st.lists(children, max_size=4).map(tuple)
    | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4),
    max_leaves=20,
)


def parsed_assignment(literal: str) -> ast.Assign:
    module = ast.parse(f"x = {literal}")
    assert len(module.body) == 1
    (statement,) = module.body
    assert isinstance(statement, ast.Assign)
    return statement


# --- python_literal -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("", "''"),
        ("gthread", "'gthread'"),
        ("it's", '"it\'s"'),
        ("a\nb", "'a\\nb'"),
        ("\x00", "'\\x00'"),
        ("é", "'\\xe9'"),
        ("\u202e", "'\\u202e'"),
        (0, "0"),
        (-5, "-5"),
        (2**70, "1180591620717411303424"),
        (0.5, "0.5"),
        (-0.0, "-0.0"),
        (1e300, "1e+300"),
        (True, "True"),
        (False, "False"),
        (None, "None"),
        ([], "[]"),
        ((), "()"),
        ((1,), "(1,)"),
        ((1, "a"), "(1, 'a')"),
        ({}, "{}"),
        (["127.0.0.1:8000", "unix:/run/a.sock"], "['127.0.0.1:8000', 'unix:/run/a.sock']"),
        ({"workers": 3, "preload": True, "bind": ["x"]}, "{'workers': 3, 'preload': True, 'bind': ['x']}"),
        ({1: None, (1, 2): [0.25]}, "{1: None, (1, 2): [0.25]}"),
    ],
)
def test_exact_literals(value: object, literal: str) -> None:
    assert python_literal(value) == literal
    assert ast.literal_eval(literal) == value


def test_bool_stays_bool_after_round_trip() -> None:
    assert ast.literal_eval(python_literal([True, 1])) == [True, 1]
    assert type(ast.literal_eval(python_literal(True))) is bool


class Sneaky(str):
    def __repr__(self) -> str:
        return "__import__('os').system('id')"


class SneakyInt(int):
    def __repr__(self) -> str:
        return "__import__('os')"


class Level(IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    ("value", "literal"),
    [(Sneaky("ok"), "'ok'"), (SneakyInt(7), "7"), (Level.HIGH, "3"), ([Sneaky("a")], "['a']")],
)
def test_subclasses_cannot_choose_their_own_rendering(value: object, literal: str) -> None:
    assert python_literal(value) == literal


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset({1}),
        b"bytes",
        bytearray(b"x"),
        1j,
        decimal.Decimal("1.5"),
        datetime.date(2024, 1, 1),
        object(),
        print,
        type,
        Ellipsis,
        range(3),
        [1, {2}],
        {"k": object()},
    ],
)
def test_anything_else_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        python_literal(value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, [1.0, math.nan], {"t": math.inf}])
def test_non_finite_floats_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        python_literal(value)


def test_self_referencing_list_is_refused_not_recursed_forever() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested deeper"):
        python_literal(loop)


@given(hostile_text)
def test_any_text_round_trips_and_renders_as_one_constant(text: str) -> None:
    literal = python_literal(text)
    assert literal.isascii() and "\n" not in literal and "\r" not in literal
    assert ast.literal_eval(literal) == text
    statement = parsed_assignment(literal)
    assert isinstance(statement.value, ast.Constant) and statement.value.value == text


@given(json_like)
def test_any_structure_round_trips_without_a_single_call(value: object) -> None:
    literal = python_literal(value)
    assert ast.literal_eval(literal) == value
    statement = parsed_assignment(literal)
    assert isinstance(statement.value, (ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.UnaryOp))
    for node in ast.walk(ast.parse(f"x = {literal}")):
        assert isinstance(node, ALLOWED_NODES), ast.dump(node)


# --- comment_text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "comment"),
    [
        ("workers=3: 1 CPU × 2 + 1", "workers=3: 1 CPU × 2 + 1"),
        ("a\nimport os", "a import os"),
        ("a\r\nExecStart=/bin/sh", "a  ExecStart=/bin/sh"),
        ("nul\x00here", "nul?here"),
        ("bell\x07", "bell?"),
        ("sep\u2028line", "sep line"),
        ("bidi\u202eevil", "bidi?evil"),
        ("tab\there", "tab here"),
        ("ends with backslash\\", "ends with backslash"),
        ("ends with backslashes \\\\ \n", "ends with backslashes"),
        ("-*- coding: utf-7 -*-", "-*- coding : utf-7 -*-"),
        ("vim: set fileencoding=latin-1", "vim: set fileencoding =latin-1"),
        ("%h and {0} are just text", "%h and {0} are just text"),
    ],
)
def test_comment_text_examples(text: str, comment: str) -> None:
    assert comment_text(text) == comment


def test_comment_text_is_capped() -> None:
    comment = comment_text("x" * 1000)
    assert len(comment) == COMMENT_MAX_LENGTH
    assert comment.endswith("...")
    assert comment_text("abcdef", max_length=5) == "ab..."


def test_comment_text_refuses_non_text() -> None:
    with pytest.raises(TypeError):
        comment_text(b"bytes")  # type: ignore[arg-type]


@given(hostile_text)
def test_any_comment_stays_a_single_harmless_line(text: str) -> None:
    comment = comment_text(text)
    assert comment.isprintable()
    assert len(comment) <= COMMENT_MAX_LENGTH
    assert not comment.endswith("\\")
    line = f"# {comment}"
    assert not PEP263.match(line)
    # Whatever the text, the comment line plus one statement is still just that statement.
    module = ast.parse(f"{line}\nx = 1\n")
    assert [type(node) for node in module.body] == [ast.Assign]
    assert line.splitlines() == [line]
