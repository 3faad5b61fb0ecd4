"""`djdeploy tune`: check the request on the controller, run the gunicorn role on the hosts,
and turn what each host reports into outcomes and one exit code."""

from __future__ import annotations

import getpass
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from djdeploy import runner
from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.gunicorn_settings import parse_override, validate_settings

PROFILES = ("cpu", "io", "mixed")
# The worst outcome decides the exit code; the codes grow with how bad the outcome is.
EXIT_FOR_OUTCOME = {
    "applied": ExitCode.OK,
    "unchanged": ExitCode.OK,
    "refused": ExitCode.REFUSED,
    "rolled_back": ExitCode.ROLLED_BACK,
    "failed": ExitCode.NEEDS_PERSON,
}


def default_inventory() -> Path:
    from djdeploy.lab.fleet import lab_inventory_path

    configured = os.environ.get("DJDEPLOY_INVENTORY")
    return Path(configured) if configured else lab_inventory_path()


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    overrides = dict(parse_override(pair, source="--set") for pair in pairs)
    return validate_settings(overrides, source="--set")


def run_identity(argv: list[str]) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    return {
        "id": f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
        "time": now.isoformat(timespec="seconds"),
        "who": f"{getpass.getuser()}@{socket.gethostname()}",
        "command": shlex.join(["djdeploy", *argv]),
    }


def tune(
    patterns: list[str],
    *,
    inventory: Path | None = None,
    profile: str | None = None,
    sets: list[str] | None = None,
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
    result = runner.run_playbook("tune.yml", inventory, hosts, extravars, check=check, on_task=on_task)
    return summarize(hosts, result)


def summarize(hosts: list[str], result: runner.PlaybookResult) -> dict[str, Any]:
    """One record per selected host, and the exit code the worst of them calls for."""
    records: dict[str, Any] = {}
    for host in hosts:
        report = result.reports.get(host)
        if report is None:
            message = result.unreachable.get(host) or result.failures.get(host) or "the run ended without a report"
            report = {
                "outcome": "failed",
                "message": f"unreachable: {message}" if host in result.unreachable else message,
                "settings": {},
                "reasons": {},
                "previous": {},
            }
        records[host] = report
    exit_code = max((EXIT_FOR_OUTCOME[r["outcome"]] for r in records.values()), default=ExitCode.OK)
    return {"hosts": records, "exit_code": int(exit_code)}
