"""The unit's sandbox: djdeploy's hardening, the exceptions an app declares, and the refusal of
anything that could escape a unit line or is not a sandboxing directive at all."""

from __future__ import annotations

from typing import Any

import pytest

from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.hardening import sandbox, unit_sandbox, write_paths

DEFAULT_LINES = [
    ["ProtectSystem", "strict"],
    ["ProtectHome", "true"],
    ["PrivateTmp", "true"],
    ["PrivateMounts", "true"],
    ["PrivateDevices", "true"],
    ["PrivateUsers", "true"],
    ["ProtectKernelTunables", "true"],
    ["ProtectKernelModules", "true"],
    ["ProtectKernelLogs", "true"],
    ["ProtectControlGroups", "true"],
    ["ProtectClock", "true"],
    ["ProtectHostname", "true"],
    ["ProtectProc", "invisible"],
    ["ProcSubset", "pid"],
    ["NoNewPrivileges", "true"],
    ["CapabilityBoundingSet", ""],
    ["AmbientCapabilities", ""],
    ["RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"],
    ["RestrictNamespaces", "true"],
    ["RestrictRealtime", "true"],
    ["RestrictSUIDSGID", "true"],
    ["LockPersonality", "true"],
    ["RemoveIPC", "true"],
    ["SystemCallArchitectures", "native"],
    ["SystemCallFilter", "@system-service"],
    ["SystemCallFilter", "~@privileged @resources"],
    ["SystemCallErrorNumber", "EPERM"],
    ["UMask", "0027"],
]


def lines_with(**changes: list[str]) -> list[list[str]]:
    """DEFAULT_LINES with each named directive's lines replaced where it was (an empty list drops it)."""
    result: list[list[str]] = []
    replaced: set[str] = set()
    for name, value in DEFAULT_LINES:
        if name not in changes:
            result.append([name, value])
        elif name not in replaced:
            result += [[name, new] for new in changes[name]]
            replaced.add(name)
    return result


@pytest.mark.parametrize(
    ("paths", "overrides"),
    [
        pytest.param(None, None, id="both null"),
        pytest.param([], {}, id="both empty"),
    ],
)
def test_the_default_sandbox(paths: Any, overrides: Any) -> None:
    assert sandbox(paths, overrides) == DEFAULT_LINES
    # MemoryDenyWriteExecute breaks cffi callbacks: never on unless the app asks.
    assert "MemoryDenyWriteExecute" not in {name for name, _ in sandbox(paths, overrides)}


def test_write_paths_follow_protect_system_on_one_line() -> None:
    lines = sandbox(["/srv/demo/data", "/srv/demo/media", "/srv/demo/data"], {})
    assert lines[:2] == [["ProtectSystem", "strict"], ["ReadWritePaths", "/srv/demo/data /srv/demo/media"]]
    assert lines[2:] == DEFAULT_LINES[1:]


OVERRIDES = [
    pytest.param({"MemoryDenyWriteExecute": True}, DEFAULT_LINES + [["MemoryDenyWriteExecute", "true"]],
                 id="add a directive, YAML true"),
    pytest.param({"PrivateDevices": False}, lines_with(PrivateDevices=["false"]), id="relax one, YAML false"),
    pytest.param({"ProcSubset": None}, lines_with(ProcSubset=[]), id="null drops a default"),
    pytest.param({"ProcSubset": "all"}, lines_with(ProcSubset=["all"]), id="replace a value"),
    pytest.param({"SystemCallFilter": ["@system-service", "~@privileged"]},
                 lines_with(SystemCallFilter=["@system-service", "~@privileged"]),
                 id="a list gives one line each, replacing both default lines"),
    pytest.param({"SystemCallFilter": "@system-service"}, lines_with(SystemCallFilter=["@system-service"]),
                 id="one value replaces both default lines"),
    pytest.param({"AmbientCapabilities": "CAP_NET_BIND_SERVICE", "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE"},
                 lines_with(CapabilityBoundingSet=["CAP_NET_BIND_SERVICE"],
                            AmbientCapabilities=["CAP_NET_BIND_SERVICE"]),
                 id="a capability to bind port 80"),
    pytest.param({"UMask": "0077"}, lines_with(UMask=["0077"]), id="UMask as a string"),
    pytest.param({"IPAddressAllow": ["localhost", "10.0.0.0/8"], "IPAddressDeny": "any"},
                 DEFAULT_LINES + [["IPAddressAllow", "localhost"], ["IPAddressAllow", "10.0.0.0/8"],
                                  ["IPAddressDeny", "any"]],
                 id="address lists"),
    pytest.param({"ReadOnlyPaths": "-/srv/demo/optional", "TemporaryFileSystem": "/var/cache:ro"},
                 DEFAULT_LINES + [["ReadOnlyPaths", "-/srv/demo/optional"], ["TemporaryFileSystem", "/var/cache:ro"]],
                 id="path prefixes and options"),
    pytest.param({"SocketBindAllow": "tcp:8000"}, DEFAULT_LINES + [["SocketBindAllow", "tcp:8000"]],
                 id="socket bind allow list"),
    pytest.param({"RestrictAddressFamilies": ""}, lines_with(RestrictAddressFamilies=[""]),
                 id="empty value resets"),
]


@pytest.mark.parametrize(("overrides", "expected"), OVERRIDES)
def test_overrides(overrides: dict[str, Any], expected: list[list[str]]) -> None:
    assert sandbox([], overrides) == expected


def refusal(paths: Any, overrides: Any) -> DjdeployError:
    with pytest.raises(DjdeployError) as caught:
        sandbox(paths, overrides)
    assert caught.value.exit_code is ExitCode.REFUSED
    return caught.value


PLAIN_VALUE_FIX = "use letters, digits, spaces and @ ~ : . _ / + , - only (no '%', '$', '\\', quotes or newlines)"

REFUSALS = [
    # values that would escape their line or mean something else to systemd
    pytest.param({"ProtectHome": "true\nExecStartPre=/bin/sh -c id"},
                 "gunicorn_hardening_overrides: ProtectHome value 'true\\nExecStartPre=/bin/sh -c id' "
                 "is not plain text for a unit line", id="newline"),
    pytest.param({"ProtectHome": "true\n"},
                 "gunicorn_hardening_overrides: ProtectHome value 'true\\n' is not plain text for a unit line",
                 id="trailing newline"),
    pytest.param({"ReadOnlyPaths": "/srv/%i"},
                 "gunicorn_hardening_overrides: ReadOnlyPaths value '/srv/%i' is not plain text for a unit line",
                 id="systemd specifier"),
    pytest.param({"ProtectHome": "tr\\\nue"},
                 "gunicorn_hardening_overrides: ProtectHome value 'tr\\\\\\nue' is not plain text for a unit line",
                 id="line continuation"),
    pytest.param({"ReadOnlyPaths": "/srv/$HOME"},
                 "gunicorn_hardening_overrides: ReadOnlyPaths value '/srv/$HOME' is not plain text for a unit line",
                 id="dollar"),
    pytest.param({"ReadOnlyPaths": '"/srv/a b"'},
                 "gunicorn_hardening_overrides: ReadOnlyPaths value '\"/srv/a b\"' is not plain text for a unit line",
                 id="quotes"),
    pytest.param({"SystemCallFilter": ["@system-service", "~@privileged\r"]},
                 "gunicorn_hardening_overrides: SystemCallFilter value '~@privileged\\r' is not plain text "
                 "for a unit line", id="carriage return in a list item"),
    pytest.param({"ProtectHome": {"read-only": True}},
                 "gunicorn_hardening_overrides: ProtectHome must be text, true/false, a number, a list of those "
                 "or null, got dict", id="a mapping as a value"),
    pytest.param({"UMask": 23},
                 "gunicorn_hardening_overrides: UMask 23 is a number", id="UMask 0027 read by YAML as 23"),
    # directives that are not exceptions to a sandbox
    pytest.param({"ExecStartPre": "/bin/sh -c id"},
                 "gunicorn_hardening_overrides: 'ExecStartPre' is not a sandboxing directive djdeploy lets "
                 "an app change", id="ExecStartPre"),
    pytest.param({"User": "root"},
                 "gunicorn_hardening_overrides: 'User' is not a sandboxing directive djdeploy lets an app change",
                 id="User"),
    pytest.param({"ProtectHomes": "true"},
                 "gunicorn_hardening_overrides: 'ProtectHomes' is not a sandboxing directive djdeploy lets an app "
                 "change; did you mean 'ProtectHome'?", id="typo"),
    pytest.param({"ProtectHome\nExecStartPre": "/bin/sh"},
                 "gunicorn_hardening_overrides: 'ProtectHome\\nExecStartPre' is not a sandboxing directive djdeploy "
                 "lets an app change; did you mean 'ProtectHome'?", id="newline in the name"),
    pytest.param({"ReadWritePaths": "/srv"}, "gunicorn_hardening_overrides sets ReadWritePaths",
                 id="write paths belong in their own input"),
    pytest.param(["ProtectHome"],
                 "gunicorn_hardening_overrides must be a mapping of systemd directives to values, got list",
                 id="not a mapping"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSALS)
def test_overrides_refused(overrides: Any, message: str) -> None:
    assert refusal([], overrides).message == message


def test_a_refused_value_says_which_characters_are_plain() -> None:
    assert refusal([], {"ReadOnlyPaths": "/srv/%i"}).fix == PLAIN_VALUE_FIX


def test_write_paths_in_the_overrides_point_to_their_input() -> None:
    assert refusal([], {"ReadWritePaths": "/srv"}).fix == "list the paths the app writes in gunicorn_read_write_paths"


def test_an_unknown_directive_lists_the_known_ones() -> None:
    fix = refusal([], {"ExecStartPre": "/bin/true"}).fix
    assert fix is not None and "MemoryDenyWriteExecute" in fix and "ProtectSystem" in fix and "ExecStart" not in fix


PATH_FIX = "set gunicorn_read_write_paths to an absolute path without spaces, '%', '$' or '..'"


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        pytest.param(["/srv/demo/data\nExecStartPre=/bin/sh"],
                     "gunicorn_read_write_paths '/srv/demo/data\\nExecStartPre=/bin/sh' is not an absolute path "
                     "of plain characters", id="newline"),
        pytest.param(["/srv/%i/data"], "gunicorn_read_write_paths '/srv/%i/data' is not an absolute path of plain "
                     "characters", id="specifier"),
        pytest.param(["srv/demo"], "gunicorn_read_write_paths 'srv/demo' is not an absolute path of plain "
                     "characters", id="relative"),
        pytest.param(["/srv/my data"], "gunicorn_read_write_paths '/srv/my data' is not an absolute path of plain "
                     "characters", id="space would split the line"),
        pytest.param(["/srv/demo/../../etc"], "gunicorn_read_write_paths '/srv/demo/../../etc' is not an absolute "
                     "path of plain characters", id="dot-dot"),
        pytest.param([None], "gunicorn_read_write_paths None is not an absolute path of plain characters",
                     id="null item"),
    ],
)
def test_write_paths_refused(paths: list[Any], message: str) -> None:
    error = refusal(paths, {})
    assert (error.message, error.fix) == (message, PATH_FIX)


def test_write_paths_must_be_a_list() -> None:
    assert refusal("/srv/demo/data", {}).message == (
        "gunicorn_read_write_paths must be a list of absolute paths, got str '/srv/demo/data'"
    )


# --- the paths the service writes ----------------------------------------------------------------


def written(source: str, target: str, kind: str, path: str | None = None, systemd: str | None = None,
            chown: bool = False) -> dict[str, Any]:
    return {"path": path or target, "kind": kind, "source": source, "target": target, "systemd": systemd,
            "chown": chown}


RUNTIME = "RuntimeDirectory=gunicorn (systemd creates /run/gunicorn for the service at each start)"
SOCKET_UNIT = "the socket unit (systemd binds the socket as root)"
# What plan.yml renders into a tuned lab host's config.
LAB_CONFIG = {"bind": ["127.0.0.1:8000"], "workers": 5, "worker_tmp_dir": "/dev/shm",
              "control_socket": "/run/gunicorn/gunicorn.ctl", "djdeploy_warm_up_paths": []}

WRITE_PATHS = [
    pytest.param({}, None, False, [], id="nothing to write"),
    pytest.param(LAB_CONFIG, ["/srv/demo/data"], False, [
        written("worker_tmp_dir", "/dev/shm", "directory"),
        written("control_socket", "/run/gunicorn/gunicorn.ctl", "directory", "/run/gunicorn", RUNTIME),
        written("gunicorn_read_write_paths", "/srv/demo/data", "path"),
    ], id="the lab's tuned config: the control socket is systemd's to make writable"),
    pytest.param({"accesslog": "/var/log/gunicorn/access.log", "errorlog": "/var/log/gunicorn/error.log"}, [], False, [
        written("accesslog", "/var/log/gunicorn/access.log", "file"),
        written("errorlog", "/var/log/gunicorn/error.log", "file"),
    ], id="log files"),
    pytest.param({"accesslog": "-", "errorlog": "-"}, [], False, [], id="logs to stdout and stderr write no file"),
    pytest.param({"accesslog": None}, [], False, [], id="no access log"),
    pytest.param({"accesslog": "logs/access.log", "pidfile": "../run/app.pid"}, [], False, [
        written("accesslog", "/srv/demo/app/logs/access.log", "file"),
        written("pidfile", "/srv/demo/run/app.pid", "directory", "/srv/demo/run"),
    ], id="relative paths are the working directory's"),
    pytest.param({"chdir": "/srv/other", "errorlog": "error.log"}, [], False, [
        written("errorlog", "/srv/other/error.log", "file"),
    ], id="gunicorn's chdir wins over the working directory"),
    pytest.param({"pidfile": "/run/gunicorn/gunicorn.pid", "accesslog": "/run/gunicorn/access.log"}, [], False, [
        written("accesslog", "/run/gunicorn/access.log", "file", systemd=RUNTIME),
        written("pidfile", "/run/gunicorn/gunicorn.pid", "directory", "/run/gunicorn", RUNTIME),
    ], id="files directly in the runtime directory"),
    pytest.param({"worker_tmp_dir": "/run/gunicorn/tmp", "pidfile": "/run/gunicorn/pids/gunicorn.pid"}, [], False, [
        written("pidfile", "/run/gunicorn/pids/gunicorn.pid", "directory", "/run/gunicorn/pids"),
        written("worker_tmp_dir", "/run/gunicorn/tmp", "directory"),
    ], id="below the runtime directory nothing exists when gunicorn starts: looked at"),
    pytest.param({"worker_tmp_dir": "/run/gunicorn-app"}, [], False, [
        written("worker_tmp_dir", "/run/gunicorn-app", "directory"),
    ], id="a name that only starts like the runtime directory"),
    pytest.param({"bind": ["127.0.0.1:8000", "unix:/run/gunicorn.sock", "unix:///srv/app/app.sock"]}, [], False, [
        written("bind", "/run/gunicorn.sock", "directory", "/run", chown=True),
        written("bind", "/srv/app/app.sock", "directory", "/srv/app", chown=True),
    ], id="unix sockets gunicorn binds itself: their directories, and chown"),
    pytest.param({"bind": "unix:/run/myapp/gunicorn.sock"}, [], True, [
        written("bind", "/run/myapp/gunicorn.sock", "directory", "/run/myapp", SOCKET_UNIT),
    ], id="a socket unit binds it: a bind given as one string"),
    pytest.param({"bind": ["unix:\0abstract", "unix:@abstract", "fd://3", "[::1]:8000"]}, [], False, [],
                 id="abstract sockets, inherited descriptors and TCP write no file"),
    pytest.param({"control_socket": "/run/gunicorn/gunicorn.ctl", "control_socket_disable": True}, [], False, [],
                 id="a disabled control socket"),
    pytest.param({}, ["/srv/demo/data", "/var/log/gunicorn", "/srv/demo/data"], False, [
        written("gunicorn_read_write_paths", "/srv/demo/data", "path"),
        written("gunicorn_read_write_paths", "/var/log/gunicorn", "path"),
    ], id="the app's own paths, once each"),
]


@pytest.mark.parametrize(("settings", "read_write_paths", "socket_activation", "expected"), WRITE_PATHS)
def test_write_paths(settings: dict[str, Any], read_write_paths: Any, socket_activation: bool,
                     expected: list[dict[str, Any]]) -> None:
    assert write_paths(settings, read_write_paths, "/srv/demo/app", socket_activation, "gunicorn") == expected


def test_write_paths_without_a_runtime_directory_leave_every_path_to_the_check() -> None:
    assert write_paths({"control_socket": "/run/gunicorn/gunicorn.ctl"}, [], "/srv/demo/app") == [
        written("control_socket", "/run/gunicorn/gunicorn.ctl", "directory", "/run/gunicorn")]


def test_write_paths_refuse_read_write_paths_that_could_escape_the_unit() -> None:
    with pytest.raises(DjdeployError) as caught:
        write_paths({}, "/srv/demo/data", "/srv/demo/app")
    assert caught.value.message == "gunicorn_read_write_paths must be a list of absolute paths, got str '/srv/demo/data'"


def test_unit_sandbox_reads_the_sandbox_a_unit_file_really_has():
    unit = ("[Unit]\nDescription=x\nProtectSystem=strict\n[Service]\nUser=demo\nExecStart=/bin/true\n"
            "ProtectSystem=strict\nReadWritePaths=/srv/demo/data /var/log/gunicorn\nSystemCallFilter=@system-service\n"
            "SystemCallFilter=~@privileged\n[Install]\nWantedBy=multi-user.target\n")
    assert unit_sandbox(unit) == [["ProtectSystem", "strict"], ["ReadWritePaths", "/srv/demo/data /var/log/gunicorn"],
                                  ["SystemCallFilter", "@system-service"], ["SystemCallFilter", "~@privileged"]]
    # A unit of the user's own, with no sandbox: the checks run without one.
    assert unit_sandbox("[Service]\nUser=demo\nExecStart=/srv/venv/bin/gunicorn app:wsgi\n") == []
