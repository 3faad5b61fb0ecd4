"""The unit's sandbox: djdeploy's hardening, the exceptions an app declares, and the refusal of
anything that could escape a unit line or is not a sandboxing directive at all."""

from __future__ import annotations

from typing import Any

import pytest

from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.hardening import sandbox

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
