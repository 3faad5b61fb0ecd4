"""What each command does on the controller: check the request, run the gunicorn role's entry
point on the hosts through the runner, and turn what each host reports into records and one
exit code. Changing commands (tune, rollback) share the outcomes; the read-only ones (status,
history) never run in a way that could change a host."""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from djdeploy import history as history_rules
from djdeploy import runner
from djdeploy import status as status_rules
from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.gunicorn_settings import parse_override, split_overrides

PROFILES = ("cpu", "io", "mixed")
# A history entry is a directory named after the run that made it: one plain path component.
_ENTRY_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,99}$")
# The worst outcome decides the exit code; the codes grow with how bad the outcome is.
EXIT_FOR_OUTCOME = {
    "applied": ExitCode.OK,
    "unchanged": ExitCode.OK,
    # --check found a change to make, and made none.
    "would_apply": ExitCode.OK,
    "refused": ExitCode.REFUSED,
    "rolled_back": ExitCode.ROLLED_BACK,
    "failed": ExitCode.NEEDS_PERSON,
    # Stopped by a signal before its change went live: nothing changed.
    "interrupted": ExitCode.REFUSED,
}


def default_inventory() -> Path:
    from djdeploy.lab.fleet import lab_inventory_path

    configured = os.environ.get("DJDEPLOY_INVENTORY")
    return Path(configured) if configured else lab_inventory_path()


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """--set KEY=VALUE pairs: typed and checked here when djdeploy's catalogue knows the setting,
    else left as text for the host's gunicorn to check."""
    split = split_overrides(dict(parse_override(pair, source="--set") for pair in pairs), source="--set")
    return {**split["catalogued"], **split["host"]}


def check_resets(names: list[str]) -> list[str]:
    """--reset names as a config file spells settings; the host's gunicorn says which exist."""
    for name in names:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,63}", name):
            raise DjdeployError(f"--reset {name!r} is not a gunicorn setting name", fix="name it as a config file does, e.g. workers")
    return sorted(set(names))


def run_identity(argv: list[str]) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    return {
        "id": f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
        "time": now.isoformat(timespec="seconds"),
        "who": f"{getpass.getuser()}@{socket.gethostname()}",
        "command": shlex.join(["djdeploy", *argv]),
        # With the controller's name, they let a later run here see that this run is gone.
        "pid": os.getpid(),
        "controller": socket.gethostname(),
    }


def tune(
    patterns: list[str],
    *,
    inventory: Path | None = None,
    profile: str | None = None,
    sets: list[str] | None = None,
    resets: list[str] | None = None,
    check: bool = False,
    on_task: Callable[[runner.TaskEvent], None] | None = None,
) -> dict[str, Any]:
    """Run the role on the hosts the patterns select; returns {"hosts": {...}, "exit_code": n}."""
    if profile is not None and profile not in PROFILES:
        raise DjdeployError(f"--profile {profile!r} is not one of {', '.join(PROFILES)}")
    overrides = parse_overrides(sets or [])
    inventory = inventory or default_inventory()
    hosts = runner.resolve_hosts(inventory, patterns)
    extravars: dict[str, Any] = {"djdeploy_run": run_identity(sys.argv[1:])}
    if profile:
        extravars["gunicorn_profile"] = profile
    if overrides:
        extravars["gunicorn_overrides"] = overrides
        extravars["gunicorn_overrides_source"] = "--set"
    if resets:
        extravars["gunicorn_reset"] = check_resets(resets)
    result = run_changing("tune.yml", inventory, hosts, extravars, check=check, on_task=on_task)
    return summarize(hosts, result)


def rollback(
    patterns: list[str],
    *,
    inventory: Path | None = None,
    to: str | None = None,
    check: bool = False,
    on_task: Callable[[runner.TaskEvent], None] | None = None,
) -> dict[str, Any]:
    """Put each host back on its last-known-good config before the live one, or on entry `to`."""
    if to is not None and not _ENTRY_ID.fullmatch(to):
        raise DjdeployError(f"--to {to!r} is not a history entry id (like 20261121T093000Z-a1b2c3)",
                            fix="see `djdeploy history HOST` for the ids")
    inventory = inventory or default_inventory()
    hosts = runner.resolve_hosts(inventory, patterns)
    extravars: dict[str, Any] = {"djdeploy_run": run_identity(sys.argv[1:])}
    if to:
        extravars["gunicorn_restore_to"] = to
    result = run_changing("rollback.yml", inventory, hosts, extravars, check=check, on_task=on_task)
    return summarize(hosts, result)


def run_changing(
    playbook: str,
    inventory: Path,
    hosts: list[str],
    extravars: dict[str, Any],
    *,
    check: bool,
    on_task: Callable[[runner.TaskEvent], None] | None,
) -> runner.PlaybookResult:
    """Run a playbook that changes hosts.

    Hosts refused because a run of this controller that no longer exists still holds their
    lock (killed, the machine crashed) are run again, taking that lock over; a lock of a live
    run, or of another controller, is left to expire.

    Ctrl-C or SIGTERM stops the run, and then, as the same run, puts every host it was changing
    back on a config that serves (`recover`); signals during that are noted, not obeyed."""
    with Interrupts() as interrupts:
        result = runner.run_playbook(playbook, inventory, hosts, extravars, check=check, on_task=on_task,
                                     cancel=interrupts.requested)
        gone = runs_gone(result.reports, socket.gethostname(), _process_alive)
        if gone and result.status != "canceled":
            again_hosts = [host for host, report in result.reports.items()
                           if (report.get("lock_holder") or {}).get("run_id") in gone]
            again = runner.run_playbook(playbook, inventory, again_hosts,
                                        {**extravars, "gunicorn_lock_takeover": sorted(gone)},
                                        check=check, on_task=on_task, cancel=interrupts.requested)
            _merge(result, again, again_hosts)
        if result.status == "canceled":
            return _recover(result, inventory, hosts, extravars, interrupts, f"stopped by {interrupts.name}",
                            check=check, on_task=on_task)
        # A host lost midway may have been left mid-change; if it answers again, put it right now.
        # One on which nothing changed yet (never reached, say) is left alone.
        lost = [host for host in hosts
                if host in result.unreachable and host not in result.reports and host in result.changed]
        if lost and not check:
            return _recover(result, inventory, lost, extravars, interrupts, "the connection was lost",
                            check=check, on_task=on_task)
    return result


def _merge(result: runner.PlaybookResult, again: runner.PlaybookResult, hosts: list[str]) -> None:
    result.reports.update(again.reports)
    result.unreachable.update(again.unreachable)
    result.failures.update(again.failures)
    result.in_flight.update(again.in_flight)
    result.changed.update(again.changed)
    result.refused_inputs.update(again.refused_inputs)
    if again.status == "canceled":
        result.status = "canceled"
        for host in hosts:
            result.reports.pop(host, None)


def _recover(
    stopped: runner.PlaybookResult,
    inventory: Path,
    hosts: list[str],
    extravars: dict[str, Any],
    interrupts: "Interrupts",
    cause: str,
    *,
    check: bool,
    on_task: Callable[[runner.TaskEvent], None] | None,
) -> runner.PlaybookResult:
    """After a run stopped or cut off: every host whose report is missing gets the role's
    recover entry point, as the same run (its lock is this run's), and each report says what
    stopped it. A host that still does not answer keeps what it has: the next run against it
    restores its last-known-good entry first."""
    # Hosts whose inputs the role refused never ran a task: nothing to put back there.
    pending = [host for host in hosts if host not in stopped.reports and host not in stopped.refused_inputs]
    if check or not pending:
        # A check run changed nothing; hosts that reported had finished.
        for host in pending:
            stopped.reports[host] = {"outcome": "interrupted", "message": f"{cause}: nothing changed",
                                     "check_mode": check}
        return stopped
    interrupts.recovering = True
    run_id = extravars["djdeploy_run"]["id"]
    recovered = runner.run_playbook("recover.yml", inventory, pending,
                                    {**extravars, "gunicorn_lock_takeover": [run_id]}, on_task=on_task)
    for host in pending:
        report = recovered.reports.get(host)
        if report is None:
            why = recovered.unreachable.get(host) or stopped.unreachable.get(host) or "no report"
            stopped.unreachable[host] = (
                f"{cause} ({why}); putting it back failed too: if it changed anything, "
                "the next djdeploy run against it restores its last-known-good entry first")
            continue
        where = stopped.in_flight.get(host)
        report["message"] = f"{cause}{f' during {where!r}' if where else ''}: {report.get('message') or ''}".rstrip(": ")
        stopped.reports[host] = report
        stopped.unreachable.pop(host, None)
    stopped.failures.update(recovered.failures)
    return stopped


class Interrupts:
    """SIGINT and SIGTERM, while a changing run is on: the first asks the run to stop; the
    recovery that follows is never stopped, since a host left midway is worse than a wait."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.recovering = False
        self._previous: dict[int, Any] = {}

    def requested(self) -> bool:
        return self.name is not None and not self.recovering

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.recovering:
            print(f"djdeploy: {name}: still putting the hosts back on a config that serves; "
                  "stopping now would leave them midway", file=sys.stderr)
            return
        if self.name is None:
            print(f"djdeploy: {name}: stopping the run, then putting every host it was changing back "
                  "on a config that serves", file=sys.stderr)
        self.name = self.name or name

    def __enter__(self) -> "Interrupts":
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def runs_gone(reports: dict[str, Any], controller: str, alive: Callable[[int], bool]) -> set[str]:
    """Run ids of locks that refused a host and belong to a process of this controller that
    is no longer running."""
    gone: set[str] = set()
    for report in reports.values():
        holder = report.get("lock_holder") or {}
        pid = holder.get("pid")
        if (report.get("outcome") == "refused" and holder.get("controller") == controller
                and isinstance(pid, int) and pid > 0 and not alive(pid) and holder.get("run_id")):
            gone.add(holder["run_id"])
    return gone


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def history(patterns: list[str], *, inventory: Path | None = None) -> dict[str, Any]:
    """Every host's history entries, newest first, with what each changed and its verdict."""
    inventory = inventory or default_inventory()
    hosts = runner.resolve_hosts(inventory, patterns)
    result = runner.run_playbook("history.yml", inventory, hosts, {})
    records: dict[str, Any] = {}
    for host in hosts:
        found = result.reports.get(host)
        if found is None:
            records[host] = _unreported(host, result)
            continue
        records[host] = {
            "outcome": "ok",
            "entries": history_rules.rows(found),
            "live": found.get("live"),
            "last_known_good": found.get("lkg"),
        }
    return _with_exit_code(records, {"ok": ExitCode.OK})


def status(patterns: list[str], *, inventory: Path | None = None) -> dict[str, Any]:
    """Per host: live, written and computed settings with their drift, the master and workers,
    the history pointers and whether /healthz answers. Changes nothing."""
    inventory = inventory or default_inventory()
    hosts = runner.resolve_hosts(inventory, patterns)
    result = runner.run_playbook("status.yml", inventory, hosts, {})
    records = {
        host: status_rules.report(result.reports[host]) if host in result.reports else _unreported(host, result)
        for host in hosts
    }
    return _with_exit_code(records, {"healthy": ExitCode.OK, "unhealthy": ExitCode.NEEDS_PERSON})


def summarize(hosts: list[str], result: runner.PlaybookResult) -> dict[str, Any]:
    """One record per selected host, and the exit code the worst of them calls for."""
    records = {
        host: result.reports.get(host) or {**_unreported(host, result), "settings": {}, "reasons": {}, "previous": {}}
        for host in hosts
    }
    return _with_exit_code(records, EXIT_FOR_OUTCOME)


def _unreported(host: str, result: runner.PlaybookResult) -> dict[str, Any]:
    if host in result.refused_inputs:
        return {"outcome": "refused", "message": f"the role's inputs were refused: {result.refused_inputs[host]}"}
    message = result.unreachable.get(host) or result.failures.get(host) or "the run ended without a report"
    return {"outcome": "failed", "message": f"unreachable: {message}" if host in result.unreachable else message}


def _with_exit_code(records: dict[str, Any], exit_for_outcome: dict[str, ExitCode]) -> dict[str, Any]:
    codes = [exit_for_outcome.get(r["outcome"], ExitCode.NEEDS_PERSON) for r in records.values()]
    return {"hosts": records, "exit_code": int(max(codes, default=ExitCode.OK))}
