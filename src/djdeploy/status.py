"""What `djdeploy status` says about a host, from what the role read there: the settings live
(control socket), in the file and what a tune would compute now, the drift between them, the
master and its workers with their ages and memory, the history pointers and the health check.
Pure: the role gathers, this judges.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from djdeploy.rollout import LIVE_CHECKED, health_advice, normalized

HEALTHY_STATUS = 200


def report(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One host's status record: {outcome, service, master, workers, settings, drift, ...}."""
    facts = raw.get("facts") or {}
    service = facts.get("service") or {}
    now = float(facts.get("collected_at_epoch") or 0)
    plan = raw.get("plan") or {}
    health = dict(raw.get("health") or {})
    health["ok"] = health.get("status") == HEALTHY_STATUS
    if not health["ok"]:
        health["advice"] = health_advice(int(health.get("status") or -1), str(health.get("url")),
                                         str(health.get("host_header")), str(health.get("message") or ""))
    history = raw.get("history") or {}
    settings = compare(_live(service), service.get("config_settings"), plan.get("settings"))
    return {
        "outcome": "healthy" if health["ok"] else "unhealthy",
        "service": {
            "active_state": service.get("active_state"),
            "sub_state": service.get("sub_state"),
            "fragment_path": service.get("fragment_path"),
            "config_path": service.get("config_path"),
            "config_sha256": service.get("config_sha256"),
            "unit_sha256": service.get("unit_sha256"),
            "control_socket": service.get("control_socket"),
            "gunicorn_version": service.get("gunicorn_version"),
        },
        "master": _process(service.get("master"), now),
        "workers": [_process(worker, now) for worker in service.get("workers") or []],
        "settings": settings,
        "drift": unfinished(history, raw.get("lock")) + drift(service, settings, plan_error=raw.get("plan_error")),
        "reasons": plan.get("reasons") or {},
        "history": {
            "live": history.get("live"),
            "last_known_good": history.get("lkg"),
            "entries": history.get("entries", 0),
            "lock": raw.get("lock"),
        },
        "health": health,
        # The unit's systemd-analyze exposure and the owner, group, mode and problems of the
        # files around the service (gunicorn_facts only stat()s them).
        "security": service.get("security"),
        "warnings": list(facts.get("warnings") or []) + list(plan.get("warnings") or []),
    }


def _live(service: Mapping[str, Any]) -> dict[str, Any] | None:
    """The live settings; without a control socket, at least the worker count the processes show."""
    if service.get("live_settings") is not None:
        return dict(service["live_settings"])
    return {"workers": len(service["workers"])} if service.get("workers") else None


def _process(process: Mapping[str, Any] | None, now: float) -> dict[str, Any] | None:
    if not process:
        return None
    started = process.get("started_at_epoch")
    return {
        "pid": process.get("pid"),
        "age_seconds": round(now - started) if started is not None and now else None,
        "rss_bytes": process.get("rss_bytes"),
        "pss_bytes": process.get("pss_bytes"),
    }


def compare(
    live: Mapping[str, Any] | None, written: Mapping[str, Any] | None, tune: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """{name: {live, file, tune}} for every setting djdeploy computes or finds in the file; a
    value is None where it is not known (no control socket, no file, no plan)."""
    live, written, tune = live or {}, written or {}, tune or {}
    names = sorted(set(tune) | set(written))
    return {name: {"live": live.get(name), "file": written.get(name), "tune": tune.get(name)} for name in names}


def drift(
    service: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]], *, plan_error: str | None = None
) -> list[str]:
    """Sentences naming each difference between what runs, what the file says and what a tune
    would set now; [] when all three agree."""
    found: list[str] = []
    if service.get("main_pid") and service.get("live_settings") is None:
        found.append("the control socket does not answer, so the live settings are unknown")
    if not service.get("main_pid"):
        found.append(f"gunicorn is not running ({service.get('active_state')}/{service.get('sub_state')})")
    if not service.get("config_settings"):
        would_set = ", ".join(f"{name}={values['tune']!r}" for name, values in settings.items()
                              if values["tune"] is not None)
        where = f" at {service['config_path']}" if service.get("config_path") else ""
        found.append(f"no config file{where}: djdeploy never tuned this host"
                     + (f"; a tune now would set {would_set}" if would_set else ""))
        settings = {}
    for name, values in settings.items():
        live, written, tune = (normalized(values[key]) for key in ("live", "file", "tune"))
        if name in LIVE_CHECKED and live is not None and written is not None and live != written:
            found.append(f"{name}: live {live!r} but the file says {written!r} (written, not loaded)")
        if tune is not None and written != tune:
            found.append(f"{name}: the file says {_shown(written)}, a tune now would set {tune!r}")
    if plan_error:
        found.append(f"a tune now would refuse: {plan_error}")
    return found


def unfinished(history: Mapping[str, Any], lock: Mapping[str, Any] | None) -> list[str]:
    """A sentence when a run moved LIVE to its entry but neither committed nor undid it: it
    still runs (it holds the lock), or it was cut off and the next changing run undoes it."""
    live, lkg = history.get("live"), history.get("lkg")
    if not live or not lkg or live == lkg:
        return []
    if lock:
        return [f"run {live} has not finished its change (LIVE {live}, last-known-good {lkg}); it holds the lock "
                f"({lock.get('who')}, pid {lock.get('pid')} on {lock.get('controller')}, {lock.get('command')}): "
                f"if that run is gone, the next tune restores {lkg} first"]
    return [f"run {live} did not finish its change (LIVE {live}, last-known-good {lkg}): "
            f"the next tune restores {lkg} first, and `djdeploy rollback` returns to it"]


def _shown(value: Any) -> str:
    return "nothing" if value is None else repr(value)
