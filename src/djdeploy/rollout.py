"""What a change to a host's gunicorn is, and whether it really happened: pure functions the
role calls through its filter plugin.

- `unit_params`: the values the systemd unit is rendered from, taken from the running unit
  (User, WorkingDirectory, EnvironmentFile, the gunicorn binary and the WSGI app) unless the
  role's inputs say otherwise, each checked so that nothing can escape a unit file line.
- `change_kind`: none, reload (HUP: only the config changed) or restart (the unit changed).
- `socket_unit_name`, `socket_activation`, `socket_listen_streams`: the socket unit that, with
  socket activation, holds gunicorn's listening sockets while it restarts.
- `restart_plan`: whether systemd holds the listening sockets while the unit restarts, so
  that no connection is refused, and why (or why not).
- `rollout_problems`: what is still wrong after a reload or restart, judged from the facts
  gathered again on the host; an empty list means the new workers really serve.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from djdeploy.errors import DjdeployError
from djdeploy.gunicorn_settings import PLAIN_PATH

# Settings whose live value (from the control socket) must equal the rendered one.
LIVE_CHECKED = (
    "workers",
    "worker_class",
    "threads",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "max_requests",
    "max_requests_jitter",
    "backlog",
    "bind",
    "preload_app",
)
# systemd gives a stopping gunicorn this much longer than its own graceful timeout before it
# kills the workers, so in-flight requests finish.
STOP_MARGIN_SECONDS = 15

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@-]{0,239}\.service$")
_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_WSGI_APP = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_]*(\(\))?)?$")
_GUNICORN_FLAGS_WITH_VALUE = {
    "-b", "--bind", "-c", "--config", "-w", "--workers", "-k", "--worker-class", "--threads",
    "-t", "--timeout", "--graceful-timeout", "--chdir", "-e", "--env", "--pythonpath",
    "--max-requests", "--max-requests-jitter", "--keep-alive", "--backlog", "-u", "--user",
    "-g", "--group", "--log-level", "--access-logfile", "--error-logfile", "--name", "-n",
}


def unit_params(service: Mapping[str, Any], inputs: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The unit's values: role inputs win, else what the running unit has."""
    exec_start = list(service.get("exec_start") or [])
    gunicorn_bin = inputs.get("gunicorn_bin") or _gunicorn_binary(exec_start)
    params = {
        "user": inputs.get("user") or service.get("user"),
        "group": inputs.get("group") or service.get("group") or inputs.get("user") or service.get("user"),
        "working_directory": inputs.get("working_directory") or service.get("working_directory"),
        "environment_files": list(inputs.get("environment_files") or service.get("environment_files") or []),
        "gunicorn_bin": gunicorn_bin,
        "wsgi_app": inputs.get("wsgi_app") or _wsgi_app(exec_start),
        "config_path": inputs["config_path"],
        # Only a rendered unit needs it; restoring a history entry validates the unit as it is.
        "timeout_stop_sec": (
            int(settings["graceful_timeout"]) + STOP_MARGIN_SECONDS if "graceful_timeout" in settings else None
        ),
    }
    _check_unit_params(params)
    return params


def _gunicorn_binary(exec_start: list[str]) -> str | None:
    for arg in exec_start:
        if arg.rsplit("/", 1)[-1] == "gunicorn":
            return arg
    return None


def _wsgi_app(exec_start: list[str]) -> str | None:
    """The positional APP_MODULE argument of a gunicorn command line."""
    args = exec_start[1:]
    if args and args[0].rsplit("/", 1)[-1] == "gunicorn":  # python -m style or a wrapper
        args = args[1:]
    positional: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _GUNICORN_FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            positional.append(arg)
    return positional[-1] if positional else None


def _check_unit_params(params: Mapping[str, Any]) -> None:
    for key in ("user", "group"):
        check_account(f"unit {key}", params[key], role_input=f"gunicorn_{key}")
    for key in ("working_directory", "gunicorn_bin", "config_path"):
        check_unit_path(key, params[key])
    for path in params["environment_files"]:
        check_unit_path("environment_files", path)
    check_wsgi_app("WSGI app", params["wsgi_app"])


def check_account(name: str, value: object, *, role_input: str) -> None:
    """Refuse a User=/Group= value that is not a plain account name, or is root."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value):
        raise DjdeployError(f"{name} {value!r} is not a plain user or group name",
                            fix=f"set {role_input} to a name of lowercase letters, digits, '_' and '-'")
    if value == "root":
        raise DjdeployError(f"{name} is root: gunicorn must not run as root", fix=f"set {role_input} to the service account")


def check_wsgi_app(name: str, value: object) -> None:
    """Refuse an APP_MODULE that is not a dotted module path with an optional :callable."""
    if not isinstance(value, str) or not _WSGI_APP.fullmatch(value):
        raise DjdeployError(f"{name} {value!r} is not a module path like project.wsgi:application",
                            fix="set gunicorn_wsgi_app")


def check_unit_path(name: str, value: object) -> None:
    """Refuse a path that could escape its unit line or mean something else to systemd."""
    if not isinstance(value, str) or not PLAIN_PATH.fullmatch(value) or "/../" in value + "/":
        raise DjdeployError(
            f"{name} {value!r} is not an absolute path of plain characters",
            fix=f"set {_input_name(name)} to an absolute path without spaces, '%', '$' or '..'",
        )


def _input_name(name: str) -> str:
    """The role input that sets a unit value."""
    return name if name.startswith("gunicorn_") else f"gunicorn_{name}"


def change_kind(
    service: Mapping[str, Any], config_values: Mapping[str, Any], unit_text: str, socket_text: str | None = None
) -> str:
    """none, reload (HUP re-reads the config) or restart (a new unit needs a new master).

    A new, changed or dropped socket unit needs a restart too: gunicorn takes its listening
    sockets from systemd only when it starts, and a HUP would make it bind by itself. So does
    turning preload off: a master that preloaded keeps the app it loaded across a HUP, and its
    new workers would fork that instead of loading the app themselves.
    """
    unit_sha = hashlib.sha256(unit_text.encode()).hexdigest()
    socket_sha = hashlib.sha256(socket_text.encode()).hexdigest() if socket_text else None
    if _needs_new_master(service, unit_sha, socket_sha) or _turns_preload_off(service, config_values):
        return "restart"
    live_file = service.get("config_settings") or {}
    if any(live_file.get(name) != value for name, value in config_values.items()):
        return "reload"
    return "none"


def _turns_preload_off(service: Mapping[str, Any], config_values: Mapping[str, Any]) -> bool:
    running = service.get("live_settings") or service.get("config_settings") or {}
    return running.get("preload_app") is True and config_values.get("preload_app") is False


def _needs_new_master(service: Mapping[str, Any], unit_sha: str | None, socket_sha: str | None) -> bool:
    """A different unit or socket unit (gunicorn takes sockets from systemd only when it
    starts), or no master at all."""
    running_socket = (service.get("socket") or {}).get("sha256")
    return (unit_sha != service.get("unit_sha256") or (socket_sha or None) != (running_socket or None)
            or not service.get("main_pid"))


def restore_kind(service: Mapping[str, Any], entry: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """none, reload or restart to put a history entry back: its files against those on the host,
    and its settings against the live ones (a config may have been written but never loaded)."""
    if _needs_new_master(service, entry.get("unit_sha256"), entry.get("socket_sha256")) or _turns_preload_off(
        service, expected
    ):
        return "restart"
    if (entry.get("config_sha256") or None) != (service.get("config_sha256") or None):
        return "reload"
    live = service.get("live_settings")
    if expected and live is not None and any(
        name in live and normalized(live[name]) != normalized(value)
        for name, value in expected.items() if name in LIVE_CHECKED
    ):
        return "reload"
    return "none"


def recovery_kind(service: Mapping[str, Any], lkg: Mapping[str, Any], expected: Mapping[str, Any],
                  unfinished: Mapping[str, Any]) -> str:
    """none, reload or restart to put the last-known-good entry back after a run that did not
    finish: as restore_kind says, except that a run cut off around its restart may have left a
    master started from its unit even where the file is the old one again; only a restart
    replaces that master."""
    if unfinished.get("change") == "restart":
        return "restart"
    return restore_kind(service, lkg, expected)


def running_bind(service: Mapping[str, Any]) -> list[str] | None:
    """The addresses the running gunicorn listens on: live from its control socket, else as its
    flags and config file say read by gunicorn's rules, else as the config file's literal says;
    None when nothing tells (an untuned master without a control socket, nothing read)."""
    for source in (service.get("live_settings"), settings_read(service), service.get("config_settings")):
        if source and source.get("bind"):
            return bind_list(source["bind"])
    return None


def settings_read(service: Mapping[str, Any]) -> dict[str, Any]:
    """The plain values of the settings the running service's flags and config file set, as
    read on the host by gunicorn's own rules (empty when they were not read)."""
    reading = service.get("settings_read") or {}
    return {name: entry["value"] for name, entry in (reading.get("settings") or {}).items()
            if entry.get("plain") and entry.get("value") is not None}


def bind_list(bind: str | list[str] | tuple[str, ...]) -> list[str]:
    """A bind as a list of addresses. A config file may give one address as a string
    (`bind = "127.0.0.1:8001"`), which gunicorn reads as a list of that one address."""
    return [bind] if isinstance(bind, str) else list(bind)


def restart_plan(unit_show: str, running_bind: list[str] | None, new_bind: list[str],
                 handed: Mapping[str, Any] | None = None, *, unit_before: str) -> dict[str, Any]:
    """{"held": bool, "handed": bool, "socket_unit": str | None, "why": str}: will connections
    wait through `systemctl restart` instead of being refused?

    They do when systemd keeps the listening sockets open: a socket unit (socket activation),
    or the file descriptor store that djdeploy's config has each master fill (or, for a master
    not started from it, that djdeploy filled from that master: `handed`, the answer of the
    `gunicorn_fdstore` module, if it ran), as long as the unit put in place keeps room for them
    and the next master serves those same addresses (its config closes stored sockets of
    another bind and binds anew). `unit_show` is `systemctl show -p
    MainPID,NFileDescriptorStore,FileDescriptorStoreMax,TriggeredBy` after systemd read the new
    unit and after any hand-over; `unit_before` is `systemctl show -p
    NFileDescriptorStore,FileDescriptorStoreMax` before systemd read it: what the running master
    had stored, under the unit it was started from.
    """
    unit = _show_properties(unit_show)
    main_pid = int(unit.get("MainPID") or 0)
    was_handed = bool(handed and handed.get("stored"))
    before = _show_properties(unit_before)
    stored_before = int(before.get("NFileDescriptorStore") or 0)
    # djdeploy's units always keep room for the bind and its config always stores it: a master
    # that stored nothing under a unit with no room was not started from djdeploy's config.
    elsewhere = not stored_before and not int(before.get("FileDescriptorStoreMax") or 0)
    held = _restart_held(unit, main_pid, running_bind, new_bind, stored_before, elsewhere,
                         (handed or {}).get("why"))
    if was_handed and held["held"]:
        origin = "not started from djdeploy's config, it had stored none" if elsewhere else "it had stored none"
        held["why"] = ("systemd held the listening sockets, which djdeploy had handed it from the running master "
                       f"({origin}), and the new master took them over: connections waited instead of being refused")
    return {"main_pid": main_pid, "handed": was_handed, "socket_unit": unit.get("TriggeredBy") or None, **held}


def _restart_held(unit: Mapping[str, str], main_pid: int, running_bind: list[str] | None, new_bind: list[str],
                  stored_before: int, elsewhere: bool, not_handed: str | None) -> dict[str, Any]:
    if unit.get("TriggeredBy"):
        return {"held": True, "why": f"socket-activated by {unit['TriggeredBy']}: systemd keeps the socket "
                                     "open across the restart"}
    if not main_pid:
        return {"held": False, "why": "no master ran, so no socket was open to keep"}
    needed, stored = len(new_bind), int(unit.get("NFileDescriptorStore") or 0)
    room = int(unit.get("FileDescriptorStoreMax") or 0)
    refused = "connections were refused until the new master listened"
    if stored < needed and room < needed and stored_before >= needed:
        # systemd drops the stored sockets beyond the room of the unit it reads.
        return {"held": False, "why": "systemd let go of the listening sockets the running master had stored when it "
                                      f"read the unit put in place, which keeps no more than {room} file descriptors "
                                      f"(FileDescriptorStoreMax={room}): {refused}"}
    if stored < needed:
        master = ("a master not started from djdeploy's config stores none" if elsewhere
                  else f"the running master had stored {stored_before} of them")
        if room < needed:
            master += f", and the unit put in place keeps no more than {room} (FileDescriptorStoreMax={room})"
        # With no room, the hand-over could only say so again.
        tried = f" and djdeploy could not hand them over ({not_handed})" if not_handed and room >= needed else ""
        return {"held": False, "why": f"systemd holds {stored} of the {needed} listening sockets ({master}){tried}: "
                                      + refused}
    if running_bind is not None and sorted(running_bind) != sorted(new_bind):
        return {"held": False, "why": f"the bind changed from {','.join(running_bind)} to "
                                      f"{','.join(new_bind)}, so the new master bound anew"}
    return {"held": True, "why": "systemd held the listening sockets and the new master took them over: "
                                 "connections waited instead of being refused"}


def restart_forecast(service: Mapping[str, Any], new_bind: list[str], socket_text: str | None) -> str:
    """--check: whether the restart a change needs would refuse connections, said before it runs.

    Judged as the restart itself judges (restart_plan): a socket unit that is added, changed or
    removed stops gunicorn before the new listener binds; a kept socket unit, or systemd's file
    descriptor store that djdeploy fills, holds the sockets unless the bind changes."""
    running_socket = (service.get("socket") or {}).get("sha256") or None
    new_socket = hashlib.sha256(socket_text.encode()).hexdigest() if socket_text else None
    if new_socket != running_socket:
        return ("restart: the socket unit would be added, changed or removed, so connections would be refused for "
                "a moment, once")
    if new_socket:
        return ("restart: the socket unit stays as it is and holds the socket: connections would wait, none would be "
                "refused")
    running = running_bind(service)
    if not service.get("main_pid"):
        return "restart: no master runs now, so there is no connection to keep"
    if running is not None and sorted(running) != sorted(new_bind):
        return (f"restart: the bind changes from {','.join(running)} to {','.join(new_bind)}, so the new master "
                "binds anew and connections to the old address would be refused")
    return ("restart: systemd would hold the listening sockets (djdeploy hands them over if the master stored none) "
            "and the new master take them over: connections would wait, none would be refused")


SOCKET_SWAP_WHY = ("the socket unit was added, changed or removed, so gunicorn stopped before the new listener "
                   "could bind its address: connections were refused for that moment, once")


def bridge_plan(restart: Mapping[str, Any], socket_swapped: bool, settings: Mapping[str, Any] | None,
                timeout: Any) -> dict[str, Any]:
    """{"use", "why", "master", "workers", "worker_tmp_dir", "timeout", "stop_timeout"}: will a
    warm bridge master serve while the unit restarts, and what the bridge module needs?

    The running master re-executes itself on USR2 into a bridge that shares its listening
    sockets, loads the app and serves with warm workers while the service restarts and the new
    master loads the app; then the bridge stops. It needs sockets the next master takes over
    (systemd holding them, `restart`'s plan), the same ones the bridge serves on (no socket
    unit swapped), and the number of workers to wait for (`settings`: those being made live).
    """
    limit = int(timeout)
    base = {"use": False, "workers": 0, "worker_tmp_dir": None, "timeout": limit, "master": 0, "stop_timeout": 0}
    if socket_swapped:
        return {**base, "why": "the socket unit changed, so no master could keep serving on the old socket"}
    if not restart.get("held"):
        return {**base, "why": "systemd does not hold the listening sockets for the next master"}
    if restart.get("handed"):
        return {**base, "why": "the running master was not started from djdeploy's config, so a copy of it would "
                               "not tell when its workers are warm"}
    settings = settings or {}
    workers = settings.get("workers")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        return {**base, "why": "the number of workers to wait for is not known"}
    return {
        **base, "use": True, "workers": workers, "master": restart["main_pid"],
        "worker_tmp_dir": settings.get("worker_tmp_dir"),
        # The bridge's graceful stop lets its in-flight requests run for up to graceful_timeout.
        "stop_timeout": int(settings.get("graceful_timeout") or 30) + 5,
        "why": f"a warm bridge master can serve while the new one loads the app (up to {limit} s to warm up)",
    }


def restart_message(restart: Mapping[str, Any], bridge: Mapping[str, Any], socket_swapped: bool,
                    bridge_result: Mapping[str, Any] | None) -> str:
    """What a restart did for the users, as the outcome's message says it.

    `bridge_result` is the bridge module's answer when one was tried: {"bridge": {"pid": ...}}
    when it served, {"msg": why} (failed, and removed) when it could not start.
    """
    if socket_swapped:
        return "restart: " + SOCKET_SWAP_WHY
    if not bridge.get("use") or not bridge_result:
        return "restart: " + restart["why"]
    pid = (bridge_result.get("bridge") or {}).get("pid")
    if not pid:
        reason = str(bridge_result.get("msg") or "it did not start").rstrip(".")
        return (f"restart: no warm bridge master served ({reason}; it was removed), so requests waited while the "
                f"new master loaded the app; {restart['why']}")
    holder = (f"the socket unit {restart['socket_unit']} kept the listening sockets open"
              if restart.get("socket_unit") else "systemd held the listening sockets")
    return (f"restart: a warm bridge master (pid {pid}) served while the new one loaded the app, so no request "
            f"waited for it; {holder} and the new master took them over")


def _show_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def rollout_problems(
    after: Mapping[str, Any],
    before: Mapping[str, Any],
    settings: Mapping[str, Any] | None,
    kind: str,
) -> list[str]:
    """Why the new gunicorn does not yet serve as rendered; [] when it does."""
    problems: list[str] = []
    master = after.get("main_pid")
    if not master:
        return ["the gunicorn master is not running"]
    if kind == "reload" and master != before.get("main_pid"):
        problems.append(f"the master changed from pid {before.get('main_pid')} to {master} during a HUP")
    old = {w["pid"] for w in before.get("workers") or []}
    workers = after.get("workers") or []
    survivors = sorted(old & {w["pid"] for w in workers})
    if survivors:
        problems.append(f"old workers still run: {survivors}")
    live = after.get("live_settings")
    if settings:
        expected_workers = settings.get("workers")
        if expected_workers is not None and len(workers) != expected_workers:
            problems.append(f"{len(workers)} workers run, {expected_workers} expected")
        if live is None:
            problems.append("the control socket does not answer, so the live settings are unknown")
        else:
            for name in LIVE_CHECKED:
                if name in settings and name in live and normalized(live[name]) != normalized(settings[name]):
                    problems.append(f"live {name} is {live[name]!r}, rendered {settings[name]!r}")
    elif not workers:
        problems.append("no worker runs")
    return problems


def rollout_settled(
    after: Mapping[str, Any],
    before: Mapping[str, Any],
    settings: Mapping[str, Any] | None,
    kind: str,
) -> bool:
    """True when waiting longer cannot change the verdict: the new workers serve as rendered,
    or the master is gone, or a HUP replaced it."""
    if not rollout_problems(after, before, settings, kind):
        return True
    master = after.get("main_pid")
    return not master or (kind == "reload" and master != before.get("main_pid"))


def previous_settings(service: Mapping[str, Any]) -> dict[str, Any]:
    """What ran before the change, as well as it is known: live; else what the flags and config
    file set (read by gunicorn's rules, else the file's literals), with the number of workers
    running when they do not say."""
    known = service.get("live_settings")
    if not known:
        known = settings_read(service) or service.get("config_settings") or {}
        workers = service.get("workers")
        if workers and "workers" not in known:
            known = {**known, "workers": len(workers)}
    if not known:
        return {}
    return {**known, **({"bind": bind_list(known["bind"])} if known.get("bind") else {})}


def normalized(value: Any) -> Any:
    """Lists and tuples of the same values compare equal (the control socket's JSON gives lists)."""
    return list(value) if isinstance(value, tuple) else value


def reused_socket_unit(service: Mapping[str, Any], bind: list[str], socket_activation: bool | None,
                       unit_dest: str) -> dict[str, str] | None:
    """The socket unit of the user's own that the new unit keeps using ({"name", "text"}), or
    None when the service has none or djdeploy wrote it. Raises DjdeployError, naming it, when
    one starts the service but cannot be kept as it is.

    Kept byte for byte, it stays where it is and keeps its listening socket open while the
    service restarts under the new unit, so no connection is refused in either direction (a
    rollback restores the user's service unit beside the same socket unit). It is kept when it
    listens on exactly the addresses the new bind names, sits next to the unit djdeploy writes,
    and its text could be read; replacing it instead refused connections (344 requests failed
    through nginx in one such tune)."""
    socket = service.get("socket")
    if not socket or socket.get("written_by_djdeploy"):
        return None
    listen = socket.get("listen") or []
    starts = PurePosixPath(service["fragment_path"]).name if service.get("fragment_path") else "the service"
    head = f"{socket.get('unit')} (listening on {', '.join(listen) or 'an address djdeploy could not read'}) starts {starts}"
    if socket_activation is False:
        why = "gunicorn_socket_activation is false, which would remove it and refuse connections"
    elif sorted(_listen_address(address) for address in bind) != sorted(listen):
        why = (f"it does not listen on exactly the addresses the new bind names ({', '.join(bind)}), and replacing "
               "it would refuse connections")
    elif not socket.get("text") or not socket.get("fragment_path"):
        why = "its unit file could not be read, so it could not be kept as it is"
    elif str(PurePosixPath(unit_dest).parent / str(socket.get("unit"))) != socket["fragment_path"]:
        why = f"it lives in {socket['fragment_path']}, not next to the unit djdeploy writes ({unit_dest})"
    else:
        return {"name": str(socket["unit"]), "text": str(socket["text"])}
    raise DjdeployError(f"{head}: {why}; nothing was changed",
                        fix="set gunicorn_bind to the addresses the socket unit listens on")


def _listen_address(address: str) -> str:
    """How systemd's Listen= shows a bind address: a unix socket by its path."""
    return address[len("unix:"):] if address.startswith("unix:") else address


def health_advice(status: int, url: str, host_header: str, message: str = "") -> str:
    """What to do about a health check that did not answer 200, naming the role variable that
    changes what djdeploy sends: `status` is the HTTP status, or 0 or less when nothing answered
    (`message` is what the request said then)."""
    if status <= 0 and "timed out" in message:
        return ("it took longer than gunicorn_verify_request_timeout allows; fix the app first, or raise that "
                "timeout if the path is slow by design")
    if status <= 0:
        return (f"nothing answered at {url}: gunicorn does not listen where djdeploy asked; if it binds elsewhere "
                "(another port, a unix socket), set gunicorn_bind to that address")
    if status == 400:
        return (f"the app refused the request with Host: {host_header} (with Django, a host missing from "
                "ALLOWED_HOSTS); set gunicorn_verify_host_header to a host the app allows, such as the one nginx "
                "passes")
    if status in (404, 405):
        return ("the app has no such page; set gunicorn_health_path to a path that answers GET with 200 and changes "
                "nothing, such as a health view of its own or /")
    if 300 <= status < 400:
        return ("the app redirects it (an HTTPS redirect, a missing slash); set gunicorn_health_path to a path that "
                "answers 200 itself")
    return "the app fails the request itself; fix it first, or put its last-known-good config back with `djdeploy rollback`"


def verify_targets(bind: list[str], paths: list[str]) -> list[dict[str, str]]:
    """One request target per path, through the first bind address (TCP or unix socket)."""
    address = bind[0]
    if address.startswith("unix:"):
        return [{"url": f"http://localhost{path}", "unix_socket": address[len("unix:"):]} for path in paths]
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "[::]":
        host = "[::1]"
    return [{"url": f"http://{host}:{port}{path}", "unix_socket": ""} for path in paths]


def socket_activation(requested: bool | None, bind: str | list[str] | tuple[str, ...]) -> bool:
    """Whether systemd binds the listening sockets (a socket unit): as `requested`
    (gunicorn_socket_activation), or when that is null, whenever a bind address is a unix socket.

    gunicorn cannot bind a unix socket itself in djdeploy's sandbox: it chowns the socket after
    binding it, a system call the filter forbids (~@privileged), and the guides' /run/gunicorn.sock
    lies in /run, where only root may create files. systemd binds it as root, keeps the file
    across restarts (a gunicorn that bound it unlinks it when it stops), and the sandbox stays as
    tight as with a TCP bind."""
    if requested is not None:
        return bool(requested)
    return any(address.startswith("unix:") for address in bind_list(bind))


def socket_unit_name(service: str) -> str:
    """The socket unit that activates a service: the service's name with .socket."""
    check_service_name(service)
    return service.removesuffix(".service") + ".socket"


def check_service_name(service: object) -> None:
    """Refuse a gunicorn_service that is not a plain NAME.service: it names files and is an
    argument to systemctl, so neither '/' nor a leading '-' (an option) may get through."""
    if not isinstance(service, str) or not _SERVICE_NAME.fullmatch(service):
        raise DjdeployError(
            f"gunicorn_service {service!r} is not a plain service unit name",
            fix="set gunicorn_service to a name such as gunicorn.service or app@web.service",
        )


def socket_listen_streams(bind: list[str], runtime_directory: str | None = None) -> list[str]:
    """ListenStream= values for a socket unit that listens where gunicorn's bind says.

    systemd neither resolves host names nor leaves % alone in the line, so both are refused;
    so is a unix socket in the service's RuntimeDirectory= (/run/`runtime_directory`), which
    systemd removes, socket and all, whenever gunicorn stops.
    """
    streams = []
    for address in bind:
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            check_unit_path("bind", path)
            if runtime_directory and PurePosixPath(path).is_relative_to(f"/run/{runtime_directory}"):
                raise DjdeployError(
                    f"bind {address!r} is in /run/{runtime_directory}, the service's RuntimeDirectory, which systemd "
                    "removes with the socket in it whenever gunicorn stops",
                    fix=f"bind a unix socket elsewhere in /run, e.g. unix:/run/{runtime_directory}.sock",
                )
            streams.append(path)
            continue
        host = address.rpartition(":")[0]
        try:
            ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise DjdeployError(
                f"socket activation needs numeric bind addresses: systemd does not resolve {host!r} in {address!r}",
                fix="bind 127.0.0.1:PORT, [::1]:PORT or unix:/path, or set gunicorn_socket_activation to false",
            ) from None
        streams.append(address)
    return streams


def file_diff(file: Mapping[str, Any], read_now: list[Mapping[str, Any]]) -> str:
    """The diff for one of --check's files: {"new", "dest", "now"} (new text or None, where it is
    written, where it is read from now or None), with `read_now` the slurp results."""
    old = next((base64.b64decode(result["content"]).decode("utf-8", "replace") for result in read_now
                if result.get("item") == file.get("now") and "content" in result), None)
    return unified_diff(file.get("new") or None, old, file["dest"], old_path=file.get("now"))


def unified_diff(new_text: str | None, old_text: str | None, path: str, old_path: str | None = None) -> str:
    """The change a config write (or, with no new text, its removal) would make, as `diff -u`
    shows it; `old_path` is where the old text is read from, when not `path`."""
    old_lines = (old_text or "").splitlines(keepends=True)
    new_lines = (new_text or "").splitlines(keepends=True)
    before = (old_path or path) if old_text is not None else "/dev/null"
    after = path if new_text is not None else "/dev/null"
    return "".join(difflib.unified_diff(old_lines, new_lines, fromfile=before, tofile=after))
