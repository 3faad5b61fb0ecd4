"""What a tune keeps of the settings the running service sets itself.

The role reads every setting the running gunicorn sets, by gunicorn's own rules, on the host
(roles/gunicorn/files/read_settings.py: flags, the config file, GUNICORN_CMD_ARGS). `adopt`
decides from that reading what the new config keeps, so that nothing the user wrote is
dropped silently:

- a setting djdeploy does not size is carried into the new config as it is;
- a setting djdeploy sizes that the user set is kept ("kept from your config file ..."),
  unless this run asks for it (an override, a role input such as gunicorn_bind, or
  `--reset NAME`, which lets djdeploy size it again);
- a few settings belong to djdeploy's unit and config (its control socket, the config file,
  the app on the command line): the user's value is replaced, and the report says so;
- the user's hook functions and values that cannot be written as literals are refused, naming
  them, rather than dropped;
- an override of a setting djdeploy's catalogue does not know (`--set access_log_format=...`)
  is checked by the host's gunicorn with its own validator, and refused naming it if it fails.

Once djdeploy's config runs, it records which of its values came from the user
(`djdeploy_kept_settings`), so the next tune keeps them again and settles.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

import posixpath

from djdeploy.errors import DjdeployError
from djdeploy.gunicorn_settings import SETTINGS
from djdeploy.hardening import write_paths

__all__ = ["DJDEPLOY_HOOKS", "Adopted", "adopt", "config_records", "kept_read_write_paths"]

# The server hooks djdeploy's config defines itself (warm-up, socket hand-over, readiness).
DJDEPLOY_HOOKS = frozenset(
    {"pre_exec", "on_starting", "when_ready", "on_reload", "post_worker_init", "worker_exit", "child_exit", "on_exit"}
)
# Settings that djdeploy's unit and config own, with what the user sets instead.
_REPLACED = {
    "config": "djdeploy's unit runs gunicorn with --config gunicorn_config_path",
    "wsgi_app": "djdeploy's unit names the app on gunicorn's command line (gunicorn_wsgi_app)",
    "control_socket": "djdeploy reads the live settings from its own control socket (gunicorn_control_socket)",
    "control_socket_disable": "djdeploy reads the live settings from its control socket (gunicorn_control_socket)",
    "check_config": "a flag for checking a config, not for serving",
    "print_config": "a flag for printing a config, not for serving",
}
# Settings whose value would stop the service working under djdeploy's unit.
_REFUSED = {
    "daemon": "daemon=True makes the master fork away from systemd, which then loses the service",
    "reload": "reload=True restarts workers whenever a file changes; a production server reloads with HUP",
}
_USER_KEPT = "djdeploy_kept_settings"
_SET_BY_OVERRIDE = "djdeploy_overridden"


class Adopted(TypedDict):
    """What ``adopt`` returns; every part JSON-able."""

    kept: dict[str, dict[str, object]]  # sized settings the user set: {"value", "from"}, for sizing
    carried: dict[str, object]  # settings djdeploy does not size, as the user set them or overrides them
    reasons: dict[str, str]  # "name=value: kept from ..." (or "set by ...") for each carried setting
    user_settings: dict[str, str]  # every user setting kept (sized or not) -> where it came from
    removed: dict[str, str]  # user settings the new config does not keep -> why
    earlier_overrides: dict[str, object]  # values an earlier tune's overrides set, not asked for again
    warnings: list[str]


def adopt(reading: Mapping[str, Any] | None, *, asked: Iterable[str], resets: Iterable[str],
          host_overrides: Mapping[str, object] | None = None, override_source: str = "gunicorn_overrides") -> Adopted:
    """Decide what the new config keeps of the running service's own settings.

    ``reading`` is what read_settings.py printed on the host (None: nothing could be read,
    e.g. no gunicorn found beside the unit's program); ``asked`` the settings this run sets
    itself (overrides and role inputs); ``resets`` the settings the user gives back to djdeploy;
    ``host_overrides`` the overrides only the host's gunicorn knows (the reader judged them).

    Raises DjdeployError naming the settings when the reading failed, when the user's config
    defines hook functions, or when a value cannot be written back as it is.
    """
    asked, resets = set(asked), set(resets)
    if not reading and host_overrides:
        raise DjdeployError(f"cannot check {', '.join(sorted(host_overrides))} (from {override_source}): the "
                            "host's gunicorn was not read", fix="check that the unit runs gunicorn from a virtualenv")
    if not reading:
        return _nothing_kept()
    if reading.get("error"):
        raise DjdeployError(
            f"could not read the settings the running service sets: {reading['error']}",
            fix="check that the unit's gunicorn, working directory and config file load as the service user",
        )
    registry = reading.get("registry") or {}
    unknown_resets = sorted(resets - set(registry))
    if unknown_resets:
        raise DjdeployError(f"--reset names no gunicorn {reading.get('gunicorn_version')} setting: "
                            f"{', '.join(unknown_resets)}", fix="name settings as gunicorn's config file does")
    user = _user_settings(reading)
    _refuse_what_cannot_be_kept(user, reading)
    result = _nothing_kept()
    for name, entry in sorted(user.items()):
        source = entry["source"]
        if name in _REPLACED:
            result["removed"][name] = _REPLACED[name]
        elif name in resets and _sized(name):
            continue  # sized as if the user had never set it; the table says why
        elif name in resets:
            result["removed"][name] = "given back to djdeploy by --reset; gunicorn's default applies"
        elif name in asked:
            continue  # this run sets it; the table shows the new value and why
        elif _sized(name):
            result["kept"][name] = {"value": _sized_shape(name, entry["value"]), "from": source}
            result["user_settings"][name] = source
        else:
            result["carried"][name] = entry["value"]
            result["reasons"][name] = f"{name}={_shown(entry['value'])}: kept from {source}"
            result["user_settings"][name] = source
    for name, value in _checked_by_host(reading, host_overrides or {}, override_source).items():
        result["carried"][name] = value
        result["reasons"][name] = f"{name}={_shown(value)}: set by {override_source}"
    earlier = reading.get("djdeploy") or {}
    for name in earlier.get(_SET_BY_OVERRIDE) or []:
        value = _config_value(reading, name)
        if name in asked or value is None:
            continue
        if _sized(name):
            result["earlier_overrides"][name] = value  # the plan warns if it sizes another value
        else:
            result["warnings"].append(
                f"{name}={_shown(value)} was set by an earlier tune's overrides and this tune drops it (gunicorn's "
                f"default applies); to keep it, pass --set {name}=... again or put it in gunicorn_overrides")
    return result


def config_records(adopted: Mapping[str, Any], overridden: Iterable[str]) -> dict[str, object]:
    """The values djdeploy's config records about itself, so the next tune reads them back:
    which settings came from the user, and which this run's overrides set."""
    user = adopted["user_settings"]
    return {_USER_KEPT: {name: user[name] for name in sorted(user)}, _SET_BY_OVERRIDE: sorted(set(overridden))}


def _checked_by_host(reading: Mapping[str, Any], overrides: Mapping[str, object], source: str) -> dict[str, object]:
    """The overrides the host's gunicorn accepted, as its validators made them; refuses the first
    one it did not, naming the closest settings of that gunicorn."""
    verdicts = reading.get("overrides") or {}
    accepted = {}
    for name in sorted(overrides):
        if name in _REPLACED or name in _REFUSED:
            raise DjdeployError(f"{name} (from {source}): {_REPLACED.get(name) or _REFUSED[name]}; nothing was changed",
                                fix=f"leave {name} to djdeploy")
        verdict = verdicts.get(name) or {"error": "the host's gunicorn did not check it"}
        if "error" in verdict:
            close = difflib.get_close_matches(name, list(reading.get("registry") or {}), n=3)
            raise DjdeployError(f"{name} (from {source}): {verdict['error']}; nothing was changed"
                                + (f"; did you mean {' or '.join(close)}?" if close else ""),
                                fix="name a setting of gunicorn's config file, with a value it accepts")
        accepted[name] = verdict["value"]
    return accepted


def _sized(name: str) -> bool:
    return name in SETTINGS and SETTINGS[name].managed


def kept_read_write_paths(adopted: Mapping[str, Any] | None, working_directory: str | None,
                          socket_activation: bool, runtime_directory: str | None) -> list[str]:
    """The directories the user's own kept settings make the service write (their log files'
    directories, their pid file's, their unix socket's when gunicorn binds it): the running
    service writes there today, so the new unit's sandbox lets it go on doing so. What an
    override asks for is not here: that is declared in gunicorn_read_write_paths, or refused."""
    if not adopted:
        return []
    user = adopted["user_settings"]
    values = {**{name: adopted["kept"][name]["value"] for name in adopted["kept"]}, **adopted["carried"]}
    mine = {name: values[name] for name in values if name in user}
    found = write_paths(mine, None, working_directory, socket_activation, runtime_directory)
    return list(dict.fromkeys(posixpath.dirname(path["path"]) if path["kind"] == "file" else path["path"]
                              for path in found if path["systemd"] is None))


def _nothing_kept() -> Adopted:
    return {"kept": {}, "carried": {}, "reasons": {}, "user_settings": {}, "removed": {}, "earlier_overrides": {},
            "warnings": []}


def _user_settings(reading: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings the user set: all of them, or in djdeploy's own config only those it
    recorded as the user's (with where they first came from)."""
    settings = reading.get("settings") or {}
    djdeploy = reading.get("djdeploy") or {}
    if not djdeploy.get("written_by_djdeploy"):
        return dict(settings)
    recorded = djdeploy.get(_USER_KEPT) or {}
    config_source = f"config file {reading.get('config_file')}"
    user = {}
    for name, entry in settings.items():
        if entry.get("source") != config_source:
            user[name] = entry  # a flag or GUNICORN_CMD_ARGS: not djdeploy's
        elif name in recorded:
            user[name] = {**entry, "source": recorded[name]}
    return user


def _refuse_what_cannot_be_kept(user: Mapping[str, Mapping[str, Any]], reading: Mapping[str, Any]) -> None:
    hooks = sorted(name for name, entry in user.items() if entry.get("hook"))
    if hooks:
        raise DjdeployError(
            f"the running service's {_where(user, hooks)} defines server hooks djdeploy cannot carry into its "
            f"config: {', '.join(hooks)}; nothing was changed",
            fix="move what the hooks do into the app (or drop them), then tune again",
        )
    for name, entry in sorted(user.items()):
        if name in _REFUSED and entry.get("value"):
            raise DjdeployError(f"the running service sets {name}: {_REFUSED[name]}; nothing was changed",
                                fix=f"remove {name} from the service's {entry['source']}")
        if entry.get("error"):
            raise DjdeployError(f"gunicorn {reading.get('gunicorn_version')} refuses {name} from the running "
                                f"service's {entry['source']}: {entry['error']}; nothing was changed",
                                fix=f"correct {name} there")
        if name not in _REPLACED and not entry.get("plain"):
            raise DjdeployError(
                f"{name} in the running service's {entry['source']} is not a plain value (text, number, list or "
                "mapping) that djdeploy can write into its config; nothing was changed",
                fix=f"set {name} to a plain value, or remove it",
            )


def _where(user: Mapping[str, Mapping[str, Any]], names: list[str]) -> str:
    sources = sorted({str(user[name]["source"]) for name in names})
    return " and ".join(sources)


def _sized_shape(name: str, value: object) -> object:
    """gunicorn takes one address as a string; djdeploy's bind is always a list."""
    if name == "bind" and isinstance(value, str):
        return [value]
    return value


def _config_value(reading: Mapping[str, Any], name: str) -> object:
    entry = (reading.get("settings") or {}).get(name) or {}
    return entry.get("value")


def _shown(value: object) -> str:
    if isinstance(value, str):
        return value if value and value.strip() == value and len(value) <= 60 else repr(value)[:60]
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
