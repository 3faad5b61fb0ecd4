"""How `tune` and `rollback` print a host's settings: a table with the reasons in a column on a
wide terminal, each reason on a line of its own on a narrow one."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from djdeploy import cli

RECORD = {
    "outcome": "applied",
    "change": "restart",
    "settings": {"workers": 5, "timeout": 30},
    "previous": {"workers": 1, "timeout": 30},
    "reasons": {
        "workers": "workers=5: 2 CPUs × 2 + 1; memory allows 21 at 38 MiB PSS each; 100 database connections",
        "timeout": "timeout=30: a request longer than 30 s is killed, as gunicorn's default",
    },
}


def printed(monkeypatch, width: int) -> str:
    out = io.StringIO()
    monkeypatch.setattr(cli, "stdout", Console(file=out, width=width, highlight=False, soft_wrap=True,
                                               color_system=None))
    cli._print_outcome("web01", RECORD)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 100])
def test_on_a_narrow_terminal_each_reason_is_one_line_of_its_own(monkeypatch, width):
    lines = printed(monkeypatch, width).splitlines()
    assert lines[0] == "web01: applied (restart)"
    assert "  timeout  30 → 30" in lines and "  workers  1 → 5" in lines
    assert "      2 CPUs × 2 + 1; memory allows 21 at 38 MiB PSS each; 100 database connections" in lines
    assert "      a request longer than 30 s is killed, as gunicorn's default" in lines


def test_on_a_wide_terminal_the_reasons_are_a_column(monkeypatch):
    lines = printed(monkeypatch, 160).splitlines()
    header = next(line for line in lines if "setting" in line)
    assert header.split() == ["setting", "before", "after", "why"]
    row = next(line for line in lines if line.strip().startswith("workers"))
    assert row.split()[:3] == ["workers", "1", "5"] and row.rstrip().endswith("100 database connections")


def test_check_mode_says_what_it_would_do_once(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(cli, "stdout", Console(file=out, width=120, highlight=False, soft_wrap=True,
                                               color_system=None))
    cli._print_outcome("web01", {**RECORD, "outcome": "would_apply", "check_mode": True})
    assert out.getvalue().splitlines()[0] == "web01: would_apply (restart)"
