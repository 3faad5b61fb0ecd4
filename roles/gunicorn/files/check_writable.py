"""Check that the service can write every path the new config and unit make it write: run as
the service user inside the new unit's sandbox, before anything changes. The list comes from
djdeploy.hardening.write_paths as JSON. Nothing is written: a file that does not exist yet
needs a writable directory, which is asked with access(2), never by creating anything.

Prints one line; exits non-zero naming each path that would not be writable, the setting or
role input it comes from and what would let the service write it."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import sys

READ_WRITE_INPUT = "gunicorn_read_write_paths"


def main(entries_json: str) -> None:
    entries = json.loads(entries_json)
    problems = [problem for problem in map(_problem, entries) if problem]
    sockets = [entry["target"] for entry in entries if entry["chown"]]
    if sockets and not _chown_allowed():
        problems.append(f"{', '.join(sockets)} (bind): gunicorn chowns a unix socket it binds itself, a system call "
                        "the sandbox forbids; leave gunicorn_socket_activation unset (or true) so that systemd binds "
                        "it")
    if problems:
        sys.exit(f"as {_user()} in the new unit's sandbox: {'; '.join(problems)}")
    print(f"{len(entries)} paths writable as {_user()} in the new unit's sandbox")


def _problem(entry: dict) -> str | None:
    if entry["systemd"]:
        return None
    path, kind = entry["path"], entry["kind"]
    named = f"{entry['target']} ({entry['source']})"
    # What the sandbox should let the service write: a log file's directory, so that it can be rotated.
    allow = os.path.dirname(path) if kind == "file" else path
    if kind == "file" and os.path.lexists(path):
        if os.path.isdir(path):
            return f"{named} is a directory, not a file"
        return _unwritable(named, path, allow, entry, os.W_OK)
    # A file gunicorn creates: its directory must let the service create it.
    where = allow
    if not os.path.exists(where):
        listed = _list_it(allow, entry)
        return f"{named}: {where} does not exist; create it, writable by {_user()}" + (
            f", and {listed}" if listed else "")
    if os.path.isdir(where):
        # Creating a file in a directory needs write and search permission.
        return _unwritable(named, where, allow, entry, os.W_OK | os.X_OK)
    if kind != "path":
        return f"{named}: {where} is not a directory"
    return _unwritable(named, where, allow, entry, os.W_OK)


def _unwritable(named: str, where: str, allow: str, entry: dict, mode: int) -> str | None:
    if os.access(where, mode):
        return None
    info = os.stat(where)
    owner = (f"{_user()} may not write {where} ({_name(pwd.getpwuid, info.st_uid)}:{_name(grp.getgrgid, info.st_gid)}, "
             f"mode {stat.S_IMODE(info.st_mode):04o}); make it writable by {_user()}")
    listed = _list_it(allow, entry)
    if not listed:
        return f"{named}: {owner}"
    also = "" if _permits(info, mode) else f"; and {owner}"
    return f"{named}: {where} is read-only in the sandbox (ProtectSystem=strict); {listed}{also}"


def _list_it(allow: str, entry: dict) -> str:
    """What lets the sandbox write `allow`: "" when it is not read-only there, or listed already."""
    if entry["source"] == READ_WRITE_INPUT:
        return ""
    existing = allow
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return f"add {allow} to {READ_WRITE_INPUT}" if _read_only(existing) else ""


def _read_only(path: str) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _permits(info: os.stat_result, mode: int) -> bool:
    """Whether the mode bits let the service user in, whatever the mount says."""
    if info.st_uid == os.getuid():
        shift = 6
    elif info.st_gid == os.getgid() or info.st_gid in os.getgroups():
        shift = 3
    else:
        shift = 0
    return (info.st_mode >> shift) & mode == mode


def _chown_allowed() -> bool:
    # A path that cannot exist: the system call filter answers before the kernel looks it up,
    # so EPERM means the filter forbids chown and ENOENT that it lets it through.
    try:
        os.chown(f"/nonexistent-djdeploy-{os.getpid()}/probe", os.getuid(), os.getgid())
    except FileNotFoundError:
        return True
    except PermissionError:
        return False
    return True


def _user() -> str:
    return _name(pwd.getpwuid, os.getuid())


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


if __name__ == "__main__":
    main(sys.argv[1])
