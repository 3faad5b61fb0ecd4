"""files/check_writable.py, the check the role runs as the service user in the new unit's sandbox,
run here on paths of its own: what it says about a missing directory, a log path that is a
directory, a worker_tmp_dir that is a file, and that it never looks at what systemd makes
writable. (Read-only mounts and the sandbox itself are the lab tests' part: test_sandbox_paths.)"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

from djdeploy.hardening import write_paths

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "gunicorn" / "files" / "check_writable.py"
USER = pwd.getpwuid(os.getuid())[0]


def check(entries: list[dict]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), json.dumps(entries)], capture_output=True, text=True,
                          timeout=60)


def test_paths_that_can_be_written_pass_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "logs" / "error.log").write_text("kept\n")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    entries = write_paths({"accesslog": "logs/access.log", "errorlog": "logs/error.log", "worker_tmp_dir": "data",
                           "pidfile": "data/gunicorn.pid"}, [str(tmp_path / "data")], str(tmp_path))
    done = check(entries)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"5 paths writable as {USER} in the new unit's sandbox\n",
                                                           "")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "logs" / "error.log").read_text() == "kept\n"


def test_each_path_that_cannot_be_written_is_named_with_its_setting(tmp_path: Path) -> None:
    (tmp_path / "access.log").mkdir()
    (tmp_path / "heartbeats").write_text("")
    entries = write_paths({"accesslog": str(tmp_path / "access.log"), "errorlog": str(tmp_path / "gone/error.log"),
                           "worker_tmp_dir": str(tmp_path / "heartbeats")}, [], None)
    done = check(entries)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        f"as {USER} in the new unit's sandbox: {tmp_path}/access.log (accesslog) is a directory, not a file; "
        f"{tmp_path}/gone/error.log (errorlog): {tmp_path}/gone does not exist; create it, writable by {USER}; "
        f"{tmp_path}/heartbeats (worker_tmp_dir): {tmp_path}/heartbeats is not a directory")


def test_what_systemd_makes_writable_is_not_looked_at(tmp_path: Path) -> None:
    entries = write_paths({"control_socket": "/run/djdeploy-test-missing/gunicorn.ctl",
                           "bind": [f"unix:{tmp_path}/missing/gunicorn.sock"]}, [], None, True, "djdeploy-test-missing")
    assert all(entry["systemd"] for entry in entries) and len(entries) == 2
    assert check(entries).returncode == 0
