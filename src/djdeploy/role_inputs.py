"""The gunicorn role's inputs that are not gunicorn settings: which paths the role may own,
which names and values may reach a unit line, a systemctl argument or an HTTP request.

The role checks them all at once, first thing (preflight), before it takes the host's lock
or looks at the host, so that a refused input leaves the host exactly as it was. Argument
specs already check the types; the rules here are the ones a type cannot say. Each refusal
names the role variable and its value.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from djdeploy import hardening, sizing
from djdeploy.errors import DjdeployError, type_name
from djdeploy.rollout import check_account, check_service_name, check_unit_path, check_wsgi_app

__all__ = ["SYSTEM_TREES", "check_role_inputs"]

# Where the operating system keeps its programs and kernel interfaces: djdeploy never writes,
# chowns or opens up anything there.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/sbin", "/sys",
                "/usr")
# The config is Python the service imports, and the role makes its directory root:root 0755:
# it belongs in a directory of its own under one of these.
CONFIG_ROOTS = ("/etc", "/srv", "/opt")
# Directories under /etc whose files other programs run or trust (Debian's
# /etc/python3.11/sitecustomize.py runs in every Python process).
_ETC_TRUSTED = re.compile(r"^(python[0-9.]*|systemd|ssh|sudoers\.d|pam\.d|security|apt|cron\..*|init\.d|profile\.d)$")
UNIT_DIRECTORY = "/etc/systemd/system"
# djdeploy's own state (history, lock) lives inside a directory with this name, so no input
# can point the role's pruning or locking at someone else's files.
STATE_DIRECTORY_NAME = "djdeploy"
# A URL path requested on the host: no whitespace or control character can end the request line.
_URL_PATH = re.compile(r"^/[!-~]{0,2047}$")
_HOST_HEADER = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
_WHOLE_NUMBER = re.compile(r"^[0-9]{1,9}$")
# (role variable, lowest, highest) of the numbers the role's own tasks use.
_NUMBERS = (
    ("gunicorn_verify_requests", 1, 1000),
    ("gunicorn_verify_timeout", 5, 3600),
    ("gunicorn_verify_request_timeout", 1, 3600),
    ("gunicorn_bridge_timeout", 1, 3600),
    ("gunicorn_history_keep", 2, 10_000),
    ("gunicorn_lock_ttl", 1, 7 * 86400),
)


def check_role_inputs(inputs: Mapping[str, Any], sizing_options: Mapping[str, Any]) -> bool:
    """True when every input is one the role may act on; else DjdeployError naming the input.

    ``inputs`` maps role variable names (gunicorn_*) to their values; ``sizing_options`` are
    the options the role passes to ``sizing.plan``, checked by sizing's own rules.
    """
    service = inputs["gunicorn_service"]
    check_service_name(service)
    config_path = inputs["gunicorn_config_path"]
    _check_config_path(config_path)
    _check_unit_path_input(inputs["gunicorn_unit_path"], service)
    history_dir, lock_path = inputs["gunicorn_history_dir"], inputs["gunicorn_lock_path"]
    for name in ("gunicorn_history_dir", "gunicorn_lock_path"):
        _check_state_path(name, inputs[name])
    if _covers(history_dir, lock_path):
        raise DjdeployError(f"gunicorn_lock_path {lock_path!r} is inside gunicorn_history_dir {history_dir!r}",
                            fix="keep the lock next to the history, e.g. /var/lib/djdeploy/lock")
    environment_files = _optional_list("gunicorn_environment_files", inputs["gunicorn_environment_files"])
    for path in environment_files:
        _check_environment_file(path)
    _check_read_write_paths(inputs["gunicorn_read_write_paths"],
                            protected=[config_path, history_dir, lock_path, *environment_files])
    hardening.sandbox(inputs["gunicorn_read_write_paths"], inputs["gunicorn_hardening_overrides"])
    for name in ("gunicorn_user", "gunicorn_group"):
        if inputs[name] is not None:
            check_account(name, inputs[name], role_input=name)
    for name in ("gunicorn_working_directory", "gunicorn_bin"):
        if inputs[name] is not None:
            check_unit_path(name, inputs[name])
    check_unit_path("gunicorn_control_socket", inputs["gunicorn_control_socket"])
    if inputs["gunicorn_wsgi_app"] is not None:
        check_wsgi_app("gunicorn_wsgi_app", inputs["gunicorn_wsgi_app"])
    _check_url_paths(inputs)
    _check_host_header(inputs["gunicorn_verify_host_header"])
    for name, lowest, highest in _NUMBERS:
        _check_number(name, inputs[name], lowest, highest)
    sizing.check_options(sizing_options)
    return True


# --- paths the role writes ---------------------------------------------------------------


def _check_config_path(path: object) -> None:
    check_unit_path("gunicorn_config_path", path)
    parts = PurePosixPath(str(path)).parts  # ("/", "etc", "gunicorn", "gunicorn.conf.py")
    in_own_directory = len(parts) >= 4 and f"/{parts[1]}" in CONFIG_ROOTS
    trusted = len(parts) >= 3 and parts[1] == "etc" and _ETC_TRUSTED.fullmatch(parts[2])
    if not str(path).endswith(".py") or not in_own_directory or trusted:
        raise DjdeployError(
            f"gunicorn_config_path {path!r} is not a path djdeploy may own: the role writes the file and makes its "
            "directory root:root 0755",
            fix=f"use a .py file in a directory of its own under {', '.join(CONFIG_ROOTS)}, "
                "e.g. /etc/gunicorn/gunicorn.conf.py",
        )


def _check_unit_path_input(path: object, service: str) -> None:
    if path is None:
        return
    expected = f"{UNIT_DIRECTORY}/{service}"
    if path != expected:
        raise DjdeployError(
            f"gunicorn_unit_path {path!r} is not where djdeploy may write the unit of {service}",
            fix=f"leave gunicorn_unit_path null or set it to {expected}",
        )


def _check_state_path(name: str, path: object) -> None:
    check_unit_path(name, path)
    parents = PurePosixPath(str(path)).parts[1:-1]
    if STATE_DIRECTORY_NAME not in parents or _in_system_tree(str(path)):
        raise DjdeployError(
            f"{name} {path!r} is not inside a directory of djdeploy's own",
            fix=f"use a path below a directory named {STATE_DIRECTORY_NAME}, e.g. /var/lib/djdeploy/"
                f"{'history' if name.endswith('dir') else 'lock'}",
        )


def _check_environment_file(path: object) -> None:
    check_unit_path("gunicorn_environment_files", path)
    # The role makes these root:<group> 0640: never a system file such as /etc/passwd.
    if PurePosixPath(str(path)).parent == PurePosixPath("/etc") or _in_system_tree(str(path)):
        raise DjdeployError(
            f"gunicorn_environment_files: {path!r} is a system file, not the app's own: djdeploy makes each "
            "environment file root:<group> 0640",
            fix="list the app's own files, e.g. /etc/myapp/env",
        )


def _check_read_write_paths(paths: object, *, protected: list[object]) -> None:
    for path in _optional_list("gunicorn_read_write_paths", paths):
        check_unit_path("gunicorn_read_write_paths", path)
        covered = next((other for other in protected if isinstance(other, str) and _covers(path, other)), None)
        if path == "/" or _in_system_tree(path) or _covers("/etc", path) or covered is not None:
            what = f"it would let the app write {covered}" if covered else "it would let the app write system files"
            raise DjdeployError(
                f"gunicorn_read_write_paths: {path!r} is outside what the app may write: {what}",
                fix="list only the app's own data directories, e.g. /srv/myapp/media",
            )


def _optional_list(name: str, value: object) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise DjdeployError(f"{name} must be a list of absolute paths, got {type_name(value)} {value!r}")
    return list(value)


def _in_system_tree(path: str) -> bool:
    return any(_covers(tree, path) for tree in SYSTEM_TREES)


def _covers(directory: str, path: str) -> bool:
    """Whether ``path`` is ``directory`` or lies below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# --- what verify sends to the app --------------------------------------------------------


def _check_url_paths(inputs: Mapping[str, Any]) -> None:
    paths = [("gunicorn_health_path", inputs["gunicorn_health_path"])]
    for name in ("gunicorn_verify_paths", "gunicorn_warm_up_paths"):
        paths += [(name, item) for item in _optional_list(name, inputs[name])]
    for name, path in paths:
        # Warm-up requests are made in-process with an empty query string.
        if not isinstance(path, str) or not _URL_PATH.fullmatch(path) or (name == "gunicorn_warm_up_paths"
                                                                            and "?" in path):
            raise DjdeployError(
                f"{name}: {path!r} is not a URL path",
                fix="write it like /healthz: a '/' then printable characters without spaces"
                    + (" or '?'" if name == "gunicorn_warm_up_paths" else ""),
            )


def _check_host_header(value: object) -> None:
    if not isinstance(value, str) or not _HOST_HEADER.fullmatch(value):
        raise DjdeployError(f"gunicorn_verify_host_header {value!r} is not a host name",
                            fix="write a name or address Django's ALLOWED_HOSTS accepts, e.g. localhost")


def _check_number(name: str, value: object, lowest: int, highest: int) -> None:
    # Argument specs take "3" for an int without converting the variable; the tasks use | int.
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value):
        number = int(value)
    if number is None or not lowest <= number <= highest:
        raise DjdeployError(f"{name} must be a whole number from {lowest} to {highest}, got {value!r}")
