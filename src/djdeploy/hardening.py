"""The sandbox systemd runs gunicorn in: djdeploy's hardening, and the exceptions an app
declares through the role's inputs.

`sandbox` returns the unit's sandboxing lines as (directive, value) pairs. The role renders
them into the unit and passes the same pairs to the `systemd-run` checks, so an exception an
app forgot (a path it writes, a syscall it needs) fails validation before anything changes.
Every value is checked here: no newline, backslash or systemd specifier can reach a unit line.

`write_paths` lists every path the new config and unit make the service write, each with the
setting or input it comes from; the role checks each one writable as the service user inside
that sandbox (files/check_writable.py) before anything changes.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from djdeploy.errors import DjdeployError, type_name
from djdeploy.rollout import bind_list, check_unit_path

__all__ = ["DEFAULT_SANDBOX", "SANDBOX_DIRECTIVES", "sandbox", "unit_sandbox", "write_paths"]

OVERRIDES_INPUT = "gunicorn_hardening_overrides"
READ_WRITE_INPUT = "gunicorn_read_write_paths"

# systemd-analyze security scores this 1.0 on a lab host, and the demo app serves, reloads,
# restarts and rolls back under it. A value is a string, or a tuple of strings for a
# directive written on several lines.
DEFAULT_SANDBOX: dict[str, str | tuple[str, ...]] = {
    # The whole file system read-only; the app's own write paths come from gunicorn_read_write_paths.
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "PrivateMounts": "true",
    # /dev/null, /dev/urandom and /dev/shm (gunicorn's worker_tmp_dir) stay; no disks or ttys.
    "PrivateDevices": "true",
    # Only root and the service account exist inside; every other uid is nobody.
    "PrivateUsers": "true",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectKernelLogs": "true",
    "ProtectControlGroups": "true",
    "ProtectClock": "true",
    "ProtectHostname": "true",
    "ProtectProc": "invisible",
    # Hides /proc/meminfo and the like from the app only: djdeploy reads the host's facts as
    # root over SSH, outside the unit. An app that reads them (psutil) sets ProcSubset: all.
    "ProcSubset": "pid",
    "NoNewPrivileges": "true",
    # gunicorn binds an unprivileged port as its own user: it needs no capability at all.
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "true",
    "RestrictRealtime": "true",
    "RestrictSUIDSGID": "true",
    "LockPersonality": "true",
    "RemoveIPC": "true",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": ("@system-service", "~@privileged @resources"),
    # A blocked call fails with EPERM, which the app logs, instead of killing the worker.
    "SystemCallErrorNumber": "EPERM",
    "UMask": "0027",
    # MemoryDenyWriteExecute is left off: it breaks cffi callbacks (cffi closures need memory
    # that is writable and executable). An app without cffi turns it on with
    # {MemoryDenyWriteExecute: true}.
}

# Sandboxing directives of systemd.exec(5) and systemd.resource-control(5) an app may set or
# relax. Anything else (ExecStartPre=, User=, Environment=) is not an exception to a sandbox.
SANDBOX_DIRECTIVES = frozenset(
    {
        *DEFAULT_SANDBOX,
        "BindPaths",
        "BindReadOnlyPaths",
        "DeviceAllow",
        "DevicePolicy",
        "ExecPaths",
        "InaccessiblePaths",
        "IPAddressAllow",
        "IPAddressDeny",
        "KeyringMode",
        "MemoryDenyWriteExecute",
        "NoExecPaths",
        "PrivateIPC",
        "PrivateNetwork",
        "ReadOnlyPaths",
        "RestrictFileSystems",
        "RestrictNetworkInterfaces",
        "SocketBindAllow",
        "SocketBindDeny",
        "TemporaryFileSystem",
    }
)
# Words, paths, address families, syscall sets (@, ~), errno (:EPERM), CIDRs, capability names
# and the -/+ path prefixes. Not %, which systemd expands, nor \, $, quotes, ; or #.
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9@~:._/+, -]*$")
_MAX_VALUE_LENGTH = 1000


def sandbox(read_write_paths: Sequence[str] | None, overrides: Mapping[str, Any] | None) -> list[list[str]]:
    """The unit's sandboxing lines, [directive, value] in order: djdeploy's defaults with the
    app's overrides applied (a null value drops a default), and ReadWritePaths= from the paths
    the app writes."""
    lines = {name: _lines_of(name, value) for name, value in DEFAULT_SANDBOX.items()}
    for name, value in _checked_overrides(overrides).items():
        lines[name] = value
    paths = _read_write_paths(read_write_paths)
    if paths:
        # Next to ProtectSystem=, the rule these paths are the exception to.
        lines = {**{"ProtectSystem": lines.pop("ProtectSystem", [])}, "ReadWritePaths": [" ".join(paths)], **lines}
    return [[name, value] for name, values in lines.items() for value in values]


def unit_sandbox(unit_text: str) -> list[list[str]]:
    """The sandboxing lines a unit file really has, [directive, value] in order: what a restored
    unit (djdeploy's, or the user's own with none at all) runs in, so the checks before a
    rollback run there too. Only directives djdeploy writes or lets an app change are read."""
    lines, section = [], None
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
            continue
        name, sep, value = line.partition("=")
        if section == "[Service]" and sep and (name in SANDBOX_DIRECTIVES or name == "ReadWritePaths"):
            lines.append([name, value])
    return lines


def _read_write_paths(paths: Sequence[str] | None) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence):
        raise DjdeployError(
            f"{READ_WRITE_INPUT} must be a list of absolute paths, got {type_name(paths)} {paths!r}"
        )
    for path in paths:
        check_unit_path(READ_WRITE_INPUT, path)
    return list(dict.fromkeys(paths))


def _checked_overrides(overrides: Mapping[str, Any] | None) -> dict[str, list[str]]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise DjdeployError(
            f"{OVERRIDES_INPUT} must be a mapping of systemd directives to values, "
            f"got {type_name(overrides)}"
        )
    return {_checked_name(name): _lines_of(name, value) for name, value in overrides.items()}


def _checked_name(name: object) -> str:
    if name == "ReadWritePaths":
        raise DjdeployError(
            f"{OVERRIDES_INPUT} sets ReadWritePaths", fix=f"list the paths the app writes in {READ_WRITE_INPUT}"
        )
    if isinstance(name, str) and name in SANDBOX_DIRECTIVES:
        return name
    shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
    close = difflib.get_close_matches(name, sorted(SANDBOX_DIRECTIVES), n=1) if isinstance(name, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DjdeployError(
        f"{OVERRIDES_INPUT}: {shown} is not a sandboxing directive djdeploy lets an app change{hint}",
        fix=f"use one of {', '.join(sorted(SANDBOX_DIRECTIVES))}",
    )


def _lines_of(name: str, value: object) -> list[str]:
    """A directive's value as unit lines: one per item of a list, none for null."""
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return [_line_value(name, item) for item in items]


def _line_value(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and name == "UMask":
        # YAML reads 0027 as the number 23; systemd would read "23" as octal 023.
        raise DjdeployError(
            f"{OVERRIDES_INPUT}: UMask {value!r} is a number", fix="quote it as a string of octal digits, e.g. '0027'"
        )
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise DjdeployError(
            f"{OVERRIDES_INPUT}: {name} must be text, true/false, a number, a list of those or null, "
            f"got {type_name(value)}"
        )
    if len(value) > _MAX_VALUE_LENGTH or not _PLAIN_VALUE.fullmatch(value):
        shown = repr(value) if len(value) <= 80 else repr(value[:77]) + "..."
        raise DjdeployError(
            f"{OVERRIDES_INPUT}: {name} value {shown} is not plain text for a unit line",
            fix="use letters, digits, spaces and @ ~ : . _ / + , - only (no '%', '$', '\\', quotes or newlines)",
        )
    return value


# gunicorn settings naming a file it opens for appending; None or '-' is stdout or stderr.
_LOG_FILES = ("accesslog", "errorlog")
_STANDARD_STREAM = "-"


def write_paths(
    settings: Mapping[str, Any],
    read_write_paths: Sequence[str] | None,
    working_directory: str | None = None,
    socket_activation: bool = False,
    runtime_directory: str | None = None,
) -> list[dict[str, Any]]:
    """Every path the service writes under the new config (`settings`, as rendered into it) and
    unit: gunicorn's (sockets, logs, pid file, heartbeats, control socket), then the app's own
    (`read_write_paths`).

    Each is {"path", "kind", "source", "target", "systemd", "chown"}: `source` is the setting or
    role input it comes from, `target` what that names (a log file, a socket) and `path` what
    must be writable for it, as `kind` says:
      - "file": gunicorn opens `path` for appending, so it must be writable if it exists and
        its directory must be, if not;
      - "directory": gunicorn creates files in `path` (a unix socket it binds, the temporary
        file it renames to the pid file, worker heartbeat files): it must exist and be writable;
      - "path": the app writes there: it must exist and be writable.
    `systemd` says why systemd itself makes the path writable when the unit starts (the unit's
    RuntimeDirectory=, a socket unit that binds the socket), else None: only those with None
    need a look on the host. `chown` is true for a unix socket gunicorn binds itself: it chowns
    the socket, a system call the sandbox's filter may forbid.

    Relative paths are relative to gunicorn's `chdir`, else the unit's WorkingDirectory.
    """
    base = settings.get("chdir") or working_directory
    runtime = f"/run/{runtime_directory}" if runtime_directory else None
    paths: list[dict[str, Any]] = []

    def add(source: str, target: str, kind: str, *, inside: bool = False, chown: bool = False,
            systemd: str | None = None) -> None:
        # `inside`: gunicorn creates `target` in its directory, which must be writable.
        target = _absolute(target, base)
        path = posixpath.dirname(target) if inside else target
        if systemd is None and runtime and (path if kind == "directory" else posixpath.dirname(path)) == runtime:
            systemd = f"RuntimeDirectory={runtime_directory} (systemd creates {runtime} for the service at each start)"
        paths.append({"path": path, "kind": kind, "source": source, "target": target, "systemd": systemd,
                      "chown": chown and systemd is None})

    for address in bind_list(settings.get("bind") or []):
        socket = _unix_socket_path(address)
        if socket is not None:
            add("bind", socket, "directory", inside=True, chown=True,
                systemd="the socket unit (systemd binds the socket as root)" if socket_activation else None)
    for name in _LOG_FILES:
        if settings.get(name) not in (None, _STANDARD_STREAM):
            add(name, settings[name], "file")
    if settings.get("pidfile"):
        add("pidfile", settings["pidfile"], "directory", inside=True)
    if settings.get("worker_tmp_dir"):
        add("worker_tmp_dir", settings["worker_tmp_dir"], "directory")
    if settings.get("control_socket") and not settings.get("control_socket_disable"):
        add("control_socket", settings["control_socket"], "directory", inside=True)
    for path in _read_write_paths(read_write_paths):
        add(READ_WRITE_INPUT, path, "path")
    return paths


def _unix_socket_path(address: str) -> str | None:
    """The file a unix socket address binds; None for TCP, fd:// and abstract sockets."""
    for prefix in ("unix://", "unix:"):
        if address.startswith(prefix):
            path = address[len(prefix):]
            return None if path.startswith(("\0", "@")) else path
    return None


def _absolute(path: str, base: str | None) -> str:
    return posixpath.normpath(posixpath.join(base, path) if base and not posixpath.isabs(path) else path)
