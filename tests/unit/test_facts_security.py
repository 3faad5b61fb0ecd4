"""The gunicorn_facts module's judgement of file permissions and its reading of systemd's
exposure score, on stat results and outputs made up for each case (the lab test checks the
real host)."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path
from types import ModuleType

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "roles" / "gunicorn" / "library"

SERVICE_UID, SERVICE_GID, OTHER_GID = 999, 997, 50


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gunicorn_facts", LIBRARY / "gunicorn_facts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


facts = load_module()


def status(mode: int, uid: int = 0, gid: int = 0, kind: int = stat.S_IFREG) -> os.stat_result:
    return os.stat_result((kind | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


ROOT_DIR = status(0o755, kind=stat.S_IFDIR)


def problems(kind: str, path: str, file_status: os.stat_result, parent: os.stat_result | None = ROOT_DIR) -> list[str]:
    return facts.file_problems(kind, path, file_status, parent, SERVICE_UID, {SERVICE_GID}, SERVICE_GID)


CONFIG = "/etc/gunicorn/gunicorn.conf.py"
ENV = "/etc/demo/env"
HISTORY = "/var/lib/djdeploy/history"

CASES = [
    # the config and the units: root's, and nobody else may change them
    pytest.param("gunicorn config", CONFIG, status(0o644), ROOT_DIR, [], id="config root 0644"),
    pytest.param("gunicorn config", CONFIG, status(0o644, uid=SERVICE_UID), ROOT_DIR,
                 [f"gunicorn config {CONFIG} is not owned by root",
                  f"gunicorn config {CONFIG} is writable by the service user"],
                 id="config owned by the service user (it may chmod it)"),
    pytest.param("gunicorn config", CONFIG, status(0o664, gid=SERVICE_GID), ROOT_DIR,
                 [f"gunicorn config {CONFIG} is writable by the service user"], id="config group-writable by its group"),
    pytest.param("gunicorn config", CONFIG, status(0o664, gid=OTHER_GID), ROOT_DIR, [],
                 id="config group-writable by a group the service is not in"),
    pytest.param("unit", "/etc/systemd/system/gunicorn.service", status(0o666), ROOT_DIR,
                 ["unit /etc/systemd/system/gunicorn.service is writable by the service user",
                  "unit /etc/systemd/system/gunicorn.service is world-writable"], id="unit world-writable"),
    pytest.param("gunicorn config", CONFIG, status(0o644), status(0o775, gid=SERVICE_GID, kind=stat.S_IFDIR),
                 [f"gunicorn config {CONFIG} can be replaced by the service user, who may write its directory"],
                 id="config in a directory the service may write"),
    # the history: root's alone
    pytest.param("history directory", HISTORY, status(0o700, kind=stat.S_IFDIR), ROOT_DIR, [], id="history 0700"),
    pytest.param("history directory", HISTORY, status(0o755, kind=stat.S_IFDIR), ROOT_DIR,
                 [f"history directory {HISTORY} is open to others than root (mode 0755)"], id="history 0755"),
    # the environment files: secrets, root writes, the service's group may read
    pytest.param("EnvironmentFile", ENV, status(0o640, gid=SERVICE_GID), ROOT_DIR, [], id="env 0640 root:demo"),
    pytest.param("EnvironmentFile", ENV, status(0o600), ROOT_DIR, [], id="env 0600 root:root"),
    pytest.param("EnvironmentFile", ENV, status(0o644, gid=SERVICE_GID), ROOT_DIR,
                 [f"EnvironmentFile {ENV} is world-readable (mode 0644)"], id="env world-readable"),
    pytest.param("EnvironmentFile", ENV, status(0o660, gid=SERVICE_GID), ROOT_DIR,
                 [f"EnvironmentFile {ENV} is writable by others than root (mode 0660)"], id="env group-writable"),
    pytest.param("EnvironmentFile", ENV, status(0o640, uid=SERVICE_UID, gid=SERVICE_GID), ROOT_DIR,
                 [f"EnvironmentFile {ENV} is not owned by root"], id="env owned by the service user"),
    pytest.param("EnvironmentFile", ENV, status(0o640, gid=0), ROOT_DIR, [], id="env readable by root's group"),
]


@pytest.mark.parametrize(("kind", "path", "file_status", "parent", "expected"), CASES)
def test_file_problems(kind: str, path: str, file_status: os.stat_result, parent: os.stat_result,
                       expected: list[str]) -> None:
    assert problems(kind, path, file_status, parent) == expected


def test_an_environment_file_readable_by_another_group_names_it() -> None:
    group = facts.name_of(facts.grp.getgrgid, OTHER_GID)
    assert problems("EnvironmentFile", ENV, status(0o640, gid=OTHER_GID)) == [
        f"EnvironmentFile {ENV} is readable by group {group}, not the service's group"
    ]


def test_file_security_never_opens_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "env"
    secret.write_text("DJANGO_SECRET_KEY=do-not-read\n")
    secret.chmod(0o640)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"opened {args[0]}")

    monkeypatch.setattr("builtins.open", refuse)
    entry = facts.file_security("EnvironmentFile", str(secret), SERVICE_UID, {SERVICE_GID}, SERVICE_GID)
    assert entry["mode"] == "0640" and entry["path"] == str(secret)


def test_an_absent_file_has_nulls_and_no_problem(tmp_path: Path) -> None:
    entry = facts.file_security("gunicorn config", str(tmp_path / "none.py"), SERVICE_UID, {SERVICE_GID}, SERVICE_GID)
    assert entry == {"kind": "gunicorn config", "path": str(tmp_path / "none.py"), "owner": None, "group": None,
                     "mode": None, "problems": []}


class FakeModule:
    def __init__(self, rc: int, out: str, err: str = ""):
        self.result = (rc, out, err)
        self.commands: list[list[str]] = []

    def run_command(self, command: list[str], **kwargs: object) -> tuple[int, str, str]:
        self.commands.append(command)
        return self.result


SECURITY_TAIL = (
    "✗ UMask=                  Files created by service are group-readable by default      0.1\n"
    "\n→ Overall exposure level for gunicorn.service: 1.1 OK 🙂\n"
)


def test_exposure_level_is_read_from_the_overall_line() -> None:
    module, warnings = FakeModule(0, SECURITY_TAIL), facts.Warnings()
    assert facts.exposure_level(module, "gunicorn.service", warnings) == 1.1
    assert module.commands == [["systemd-analyze", "security", "--no-pager", "gunicorn.service"]]
    assert warnings == []


def test_exposure_level_is_null_with_a_warning_when_systemd_cannot_score() -> None:
    module, warnings = FakeModule(1, "", "Failed to connect to bus: No such file or directory"), facts.Warnings()
    assert facts.exposure_level(module, "gunicorn.service", warnings) is None
    assert warnings == ["systemd-analyze security gunicorn.service: Failed to connect to bus: No such file or directory"]


def test_socket_unit_is_read_from_triggered_by() -> None:
    shown = ("Id=gunicorn.socket\nLoadState=loaded\nActiveState=active\n"
             "FragmentPath=/nonexistent/gunicorn.socket\nListen=127.0.0.1:8000 (Stream)\nListen=/run/app.sock (Stream)\n")
    module, warnings = FakeModule(0, shown), facts.Warnings()
    socket = facts.socket_unit(module, "gunicorn.socket", warnings)
    assert socket == {"unit": "gunicorn.socket", "active_state": "active",
                      "fragment_path": "/nonexistent/gunicorn.socket", "sha256": None,
                      # A file that cannot be read is not known to be djdeploy's.
                      "written_by_djdeploy": False, "text": None, "listen": ["127.0.0.1:8000", "/run/app.sock"]}
    assert facts.socket_unit(module, "", warnings) is None
    assert facts.socket_unit(module, "gunicorn.path", warnings) is None


def test_account_ids_of_an_unknown_user_warn() -> None:
    warnings = facts.Warnings()
    assert facts.account_ids("no-such-user-here", "no-such-group", warnings) == (None, set())
    assert warnings == ["service user no-such-user-here is unknown: file permissions are judged for root only"]
