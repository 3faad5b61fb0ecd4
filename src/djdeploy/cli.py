"""The `djdeploy` command line. Commands are thin: they parse, call the domain code, and
print. A DjdeployError anywhere becomes its message on stderr and its exit code here, at the
edge. With --json a command prints exactly one JSON document on stdout; everything else goes
to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from djdeploy.errors import DjdeployError, ExitCode

app = typer.Typer(
    help="Size, change and undo Gunicorn settings on Django hosts, safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
lab_app = typer.Typer(help="Disposable real systemd hosts serving a demo Django app.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")

# soft_wrap: messages stay one line each, so they can be read and grepped whole.
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

LabOption = Annotated[
    Optional[str],
    typer.Option("--lab", help="Which lab (default: $DJDEPLOY_LAB or 'lab').", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _progress(message: str) -> None:
    stderr.print(Text("djdeploy: ", style="dim") + Text(message))


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def _lab(name: str | None):
    from djdeploy.lab.fleet import Lab

    return Lab(name, log=_progress)


def _hosts_table(hosts: list[dict[str, Any]]) -> Table:
    table = Table("host", "address", "url", "cpus", "memory", "import delay", "state")
    for h in hosts:
        memory = f"{h['memory_bytes'] / 1024**3:.1f}G" if h["memory_bytes"] else "machine"
        table.add_row(
            h["host"], h["address"], h["url"], str(h["cpus"] or "machine"), memory, f"{h['import_delay']:g} s",
            h["state"],
        )
    return table


InventoryOption = Annotated[
    Optional[Path],
    typer.Option("-i", "--inventory", help="Ansible inventory (default: $DJDEPLOY_INVENTORY, else the lab's).",
                 show_default=False),
]

OUTCOME_STYLE = {"applied": "green", "unchanged": "cyan", "would_apply": "cyan", "rolled_back": "yellow",
                 "refused": "red", "interrupted": "red", "failed": "bold red"}


def _task_progress(event) -> None:
    if event.status in ("skipped",):
        return
    style = {"changed": "yellow", "failed": "red", "unreachable": "red"}.get(event.status, "dim")
    line = Text(f"{event.host:<12} ") + Text(f"{event.status:<11}", style=style) + Text(event.task)
    if event.message and event.status in ("failed", "unreachable"):
        line += Text(f"\n{'':<24}{event.message}", style=style)
    stderr.print(line)


# Below this many columns the reasons get lines of their own: in a fourth column each one
# was squeezed into a cell five lines tall.
WIDE_ENOUGH_FOR_A_REASON_COLUMN = 120


def _print_settings(settings: dict[str, Any], previous: dict[str, Any], reasons: dict[str, str]) -> None:
    """Each setting before → after, changed ones in bold, with the reason for its value."""
    rows = []
    for name, value in sorted(settings.items()):
        before = previous.get(name, "-")
        rows.append((name, _show(before), Text(_show(value), style="bold" if before != value else ""),
                     reasons.get(name, "").split(": ", 1)[-1]))
    if stdout.width >= WIDE_ENOUGH_FOR_A_REASON_COLUMN:
        table = Table("setting", "before", "after", "why", box=None, padding=(0, 2, 0, 2))
        for row in rows:
            table.add_row(*row)
        stdout.print(table)
        return
    for name, before, after, reason in rows:
        stdout.print(Text(f"  {name}  {before} → ") + after)
        if reason:
            stdout.print(Text(f"      {reason}", style="dim"))


def _print_outcome(host: str, record: dict[str, Any]) -> None:
    """A host's outcome, then each setting before → after with the reason."""
    outcome = record["outcome"]
    change = record.get("change")
    title = Text(f"{host}: ") + Text(outcome, style=OUTCOME_STYLE.get(outcome, ""))
    if change and change != "none":
        title += Text(f" ({change})")
    if record.get("restores"):
        title += Text(f", restoring {record['restores']}")
    stdout.print(title)
    settings = record.get("settings") or {}
    if settings:
        _print_settings(settings, record.get("previous") or {}, record.get("reasons") or {})
    for name, why in sorted((record.get("removed") or {}).items()):
        before = (record.get("previous") or {}).get(name, "-")
        stdout.print(Text(f"  {name}  {_show(before)} → ") + Text("removed", style="bold") + Text(f": {why}"))
    if record.get("diff"):
        stdout.print(Text(record["diff"], style="dim"), soft_wrap=True)
    for warning in record.get("warnings") or []:
        stdout.print(Text(f"  warning: {warning}", style="yellow"))
    if record.get("message"):
        stdout.print(Text(f"  {record['message']}", style=OUTCOME_STYLE.get(outcome, "")))


def _finish(summary: dict[str, Any], as_json: bool, print_host: Callable[[str, dict[str, Any]], None]) -> NoReturn:
    """Print the hosts' records (--json: one document), then exit with the summary's code."""
    if as_json:
        _print_json({"hosts": summary["hosts"]})
    else:
        for host, record in sorted(summary["hosts"].items()):
            print_host(host, record)
    raise typer.Exit(summary["exit_code"])


def _show(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


@app.command("tune")
def tune_command(
    patterns: Annotated[list[str], typer.Argument(help="Ansible host patterns: web01, 'web*', a group.")],
    inventory: InventoryOption = None,
    profile: Annotated[
        Optional[str], typer.Option("--profile", help="cpu (sync workers), io or mixed (gthread).")
    ] = None,
    sets: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override one gunicorn setting: KEY=VALUE (repeatable).")
    ] = None,
    resets: Annotated[
        Optional[list[str]],
        typer.Option("--reset", help="Size a setting the service's own config or flags set, instead of keeping "
                                     "it (repeatable); a setting djdeploy does not size goes back to gunicorn's default."),
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Show facts, settings and the diff; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Size gunicorn from each host's facts, apply it safely, verify it, roll back on failure."""
    from djdeploy.operations import tune

    summary = tune(patterns, inventory=inventory, profile=profile, sets=sets or [], resets=resets or [],
                   check=check, on_task=_task_progress)
    _finish(summary, as_json, _print_outcome)


@app.command("rollback")
def rollback_command(
    patterns: Annotated[list[str], typer.Argument(help="Ansible host patterns: web01, 'web*', a group.")],
    to: Annotated[
        Optional[str], typer.Option("--to", help="History entry id to restore (default: the last-known-good before the live one).")
    ] = None,
    inventory: InventoryOption = None,
    check: Annotated[bool, typer.Option("--check", help="Show what would be restored; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Put an earlier config back: validated, applied with HUP or restart, verified, undone if it fails."""
    from djdeploy.operations import rollback

    summary = rollback(patterns, inventory=inventory, to=to, check=check, on_task=_task_progress)
    _finish(summary, as_json, _print_outcome)


@app.command("history")
def history_command(
    patterns: Annotated[list[str], typer.Argument(help="Host name or Ansible host patterns.")],
    inventory: InventoryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every change on each host: when, who, the command, what changed, verdict, LIVE and LKG."""
    from djdeploy.operations import history

    summary = history(patterns, inventory=inventory)
    _finish(summary, as_json, _print_history)


@app.command("status")
def status_command(
    patterns: Annotated[list[str], typer.Argument(help="Ansible host patterns: web01, 'web*', a group.")],
    inventory: InventoryOption = None,
    as_json: JsonOption = False,
) -> None:
    """What runs: live, written and computed settings with drift, workers, history, health. Read-only."""
    from djdeploy.operations import status

    summary = status(patterns, inventory=inventory)
    _finish(summary, as_json, _print_status)


def _print_history(host: str, record: dict[str, Any]) -> None:
    if record["outcome"] != "ok":
        stdout.print(Text(f"{host}: {record['message']}", style="bold red"))
        return
    entries = record["entries"]
    if not entries:
        stdout.print(f"{host}: no djdeploy history")
        return
    stdout.print(Text(f"{host}: ", style="bold") + Text(f"{len(entries)} entries, live {record['live']}, "
                                                         f"last-known-good {record['last_known_good']}"))
    # One block per entry, newest first: ids stay whole so they can be copied into --to.
    for entry in entries:
        marks = [mark for mark, on in (("LIVE", entry["live"]), ("LKG", entry["last_known_good"])) if on]
        line = Text(f"  {entry['id']}  ") + Text(str(entry["verdict"]), style=VERDICT_STYLE.get(entry["verdict"], ""))
        if marks:
            line += Text("  " + " ".join(marks), style="bold")
        stdout.print(line)
        stdout.print(Text(f"      {entry['time'] or '?'}  {entry['who'] or '?'}  {entry['command'] or ''}", style="dim"))
        changed = ", ".join(f"{name} {_show(before) if before is not None else '?'} → {_show(after)}"
                            for name, (before, after) in entry["changed"].items())
        if entry.get("restores"):
            stdout.print(f"      restores {entry['restores']}")
        if changed:
            stdout.print(f"      changed: {changed}")
        if entry.get("failure"):
            stdout.print(Text(f"      why: {entry['failure']}", style=VERDICT_STYLE.get(entry["verdict"], "")))


VERDICT_STYLE = {"good": "green", "rolled_back": "yellow", "refused": "red", "pending": "bold red",
                 "unreadable": "bold red"}


def _print_status(host: str, record: dict[str, Any]) -> None:
    outcome = record["outcome"]
    if outcome == "failed":
        stdout.print(Text(f"{host}: {record['message']}", style="bold red"))
        return
    service, master, health = record["service"], record["master"], record["health"]
    title = Text(f"{host}: ") + Text(outcome, style="green" if outcome == "healthy" else "bold red")
    title += Text(f"  {service['active_state']}/{service['sub_state']}")
    if master:
        title += Text(f", master {master['pid']} up {_age(master['age_seconds'])}")
    history = record["history"]
    title += Text(f", live {history['live'] or '-'}, last-known-good {history['last_known_good'] or '-'}")
    stdout.print(title)
    stdout.print(f"  health: {health.get('url')} → {health.get('status')}"
                 + (f" ({health['message']})" if not health["ok"] and health.get("message") else ""))
    if health.get("advice"):
        stdout.print(Text(f"  {health['advice']}", style="yellow"))
    table = Table("setting", "live", "file", "tune now", box=None, padding=(0, 2, 0, 2))
    for name, values in record["settings"].items():
        cells = [_show(values[key]) if values[key] is not None else "-" for key in ("live", "file", "tune")]
        table.add_row(name, *cells)
    stdout.print(table)
    workers = Table("worker pid", "age", "RSS", "PSS", box=None, padding=(0, 2, 0, 2))
    for worker in record["workers"]:
        workers.add_row(str(worker["pid"]), _age(worker["age_seconds"]), _mib(worker["rss_bytes"]),
                        _mib(worker["pss_bytes"]))
    stdout.print(workers)
    for line in record["drift"]:
        stdout.print(Text(f"  drift: {line}", style="yellow"))
    _print_security(record.get("security"))
    for warning in record["warnings"]:
        stdout.print(Text(f"  warning: {warning}", style="yellow"))


def _print_security(security: dict[str, Any] | None) -> None:
    if not security:
        return
    exposure = security.get("exposure")
    stdout.print(f"  exposure: {exposure if exposure is not None else '?'} (systemd-analyze security; 0 safest, 10 worst)")
    for found in security.get("files") or []:
        stdout.print(Text(f"  {found['kind']}: {found['path']}  {found.get('owner')}:{found.get('group')} {found.get('mode')}",
                          style="yellow" if found.get("problems") else ""))
        for problem in found.get("problems") or []:
            stdout.print(Text(f"    problem: {problem}", style="bold yellow"))


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 1048576:.1f} MiB"


@lab_app.command("up")
def lab_up(
    hosts: Annotated[int, typer.Option("--hosts", help="How many hosts: web01 … webNN.")] = 1,
    cpus: Annotated[Optional[int], typer.Option("--cpus", help="CPUs each host may use (cpuset).")] = None,
    memory: Annotated[Optional[str], typer.Option("--memory", help="Memory limit per host, e.g. 1G.")] = None,
    import_delay: Annotated[
        float, typer.Option("--import-delay", help="Seconds the demo app's URLconf import takes.")
    ] = 0.0,
    lab: LabOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create and boot lab hosts, each serving the demo app through nginx and gunicorn."""
    started = _lab(lab).up(hosts, cpus=cpus, memory=memory, import_delay=import_delay)
    if as_json:
        _print_json({"hosts": started})
        return
    stdout.print(_hosts_table(started))
    stdout.print(f"inventory: {started[0]['inventory']}")


@lab_app.command("ls")
def lab_ls(lab: LabOption = None, as_json: JsonOption = False) -> None:
    """List the lab's hosts: addresses, URLs, sizes and state."""
    hosts = _lab(lab).hosts()
    if as_json:
        _print_json({"hosts": hosts})
    elif hosts:
        stdout.print(_hosts_table(hosts))
    else:
        stderr.print("no lab hosts (start some with `djdeploy lab up`)")


@lab_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def lab_exec(
    host: Annotated[str, typer.Argument(help="Host name, e.g. web01.")],
    command: Annotated[list[str], typer.Argument(help="Command to run as root inside the host (after --).")],
    lab: LabOption = None,
) -> None:
    """Run a command inside a host as root; its exit code passes through."""
    raise typer.Exit(_lab(lab).exec(host, command))


@lab_app.command("down")
def lab_down(
    hosts: Annotated[Optional[list[str]], typer.Argument(help="Hosts to remove (default: all).")] = None,
    lab: LabOption = None,
) -> None:
    """Stop and remove hosts with their namespaces, links, cgroups and files."""
    removed = _lab(lab).down(hosts or None)
    stderr.print(f"removed: {', '.join(removed)}" if removed else "nothing of this lab was running")


def main() -> None:
    try:
        app()
    except DjdeployError as exc:
        stderr.print(Text("djdeploy: error: ", style="bold red") + Text(exc.message))
        if exc.fix:
            stderr.print(Text(f"  fix: {exc.fix}"))
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        stderr.print("djdeploy: interrupted")
        sys.exit(int(ExitCode.ERROR))
