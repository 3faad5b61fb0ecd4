"""docs/faults-and-inputs.md says only what the tests' `covers` markers say, and they cover at
least what issue 6 asks for: 15 faults and 30 hostile inputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "covered.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_the_docs_table_matches_the_tests():
    done = run("--check")
    assert done.returncode == 0, done.stderr


def test_the_tests_cover_at_least_15_faults_and_30_hostile_inputs():
    done = run()
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r"^## (Faults|Hostile input)[^:]*: (\d+)$", done.stdout, re.M))
    assert int(counts["Faults"]) >= 15 and int(counts["Hostile input"]) >= 30, counts
