"""The one module that talks to Ansible: it resolves host patterns against the inventory and
runs a playbook through ansible-runner. Everything else receives plain results.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from djdeploy.errors import DjdeployError, ExitCode

PROJECT_DIR = Path(os.environ.get("DJDEPLOY_PROJECT_DIR", Path(__file__).resolve().parents[2]))
PLAYBOOKS_DIR = PROJECT_DIR / "playbooks"
ROLES_DIR = PROJECT_DIR / "roles"


@dataclass
class PlaybookResult:
    """What a run did, per host, in plain data."""

    status: str  # ansible-runner's: successful, failed or canceled (timeout raises)
    reports: dict[str, dict[str, Any]]  # the role's set_stats record per host
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> message
    failures: dict[str, str] = field(default_factory=dict)  # host -> last failure message
    in_flight: dict[str, str] = field(default_factory=dict)  # host -> the task it last started
    changed: set[str] = field(default_factory=set)  # hosts on which a task changed something
    # host -> message, for hosts whose run the role's argument specs stopped before any task
    # ran on them: a refusal of the inputs, not a failure on the host.
    refused_inputs: dict[str, str] = field(default_factory=dict)


@dataclass
class TaskEvent:
    host: str
    task: str
    status: str  # ok, changed, failed, skipped, unreachable
    message: str = ""


def resolve_hosts(inventory: Path, patterns: list[str]) -> list[str]:
    """The hosts the patterns select; every pattern must select at least one."""
    if not inventory.exists():
        raise DjdeployError(
            f"inventory {inventory} does not exist",
            fix="pass -i/--inventory, set $DJDEPLOY_INVENTORY, or start lab hosts with `djdeploy lab up`",
        )
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    selected: list[str] = []
    for pattern in patterns:
        hosts = [h.name for h in manager.get_hosts(pattern)]
        if not hosts:
            known = ", ".join(sorted(h.name for h in manager.get_hosts("all"))[:10]) or "none"
            raise DjdeployError(
                f"host pattern {pattern!r} matches no host in {inventory}; nothing was changed",
                fix=f"hosts there: {known}",
            )
        selected.extend(h for h in hosts if h not in selected)
    return selected


def run_playbook(
    playbook: str,
    inventory: Path,
    hosts: list[str],
    extravars: dict[str, Any],
    *,
    check: bool = False,
    on_task: Callable[[TaskEvent], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PlaybookResult:
    """Run the playbook on the hosts. `cancel` is asked about twice a second; when it says
    True, ansible-playbook is killed and the result has status "canceled"."""
    import ansible_runner

    collected = _Collector(on_task)
    # Use the ansible-playbook installed beside this Python, whatever PATH says: ansible-runner
    # looks it up on this process's PATH.
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("ansible-playbook") is None:
        raise DjdeployError("ansible-playbook is not installed", ExitCode.ERROR,
                            fix="pip install 'ansible-core>=2.19,<2.20'")
    cmdline = "--check --diff" if check else "--diff"
    with tempfile.TemporaryDirectory(prefix="djdeploy-run-") as private_dir:
        runner = ansible_runner.run(
            private_data_dir=private_dir,
            playbook=str(PLAYBOOKS_DIR / playbook),
            inventory=str(inventory),
            limit=",".join(hosts),
            extravars=extravars,
            cmdline=cmdline,
            envvars={
                "ANSIBLE_ROLES_PATH": str(ROLES_DIR),
                "ANSIBLE_HOST_KEY_CHECKING": "False",
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_INTERPRETER_PYTHON": "auto_silent",
                # ssh masters must not outlive the command by a minute.
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=10s",
            },
            quiet=True,
            event_handler=collected.handle,
            cancel_callback=cancel,
            settings={"pexpect_timeout": 0.5},
        )
        collected.result.status = runner.status
        if runner.status == "canceled":
            kill_leftovers(private_dir)
            return collected.result
        if not collected.saw_stats:
            # Ansible never got to run the play (bad inventory, a syntax error, a crash).
            output = runner.stdout.read().strip()[-3000:] if runner.stdout else ""
            raise DjdeployError(f"ansible-playbook failed before the play ran (rc {runner.rc}):\n{output}",
                                ExitCode.ERROR)
    if runner.status == "timeout":
        raise DjdeployError(f"the Ansible run ended: {runner.status}", ExitCode.ERROR)
    return collected.result


def kill_leftovers(private_dir: str) -> list[int]:
    """Kill every process still running with this run's private directory on its command line
    (ansible-playbook and its forks: `-e @<private_dir>/env/extravars`); their pids.

    ansible-runner's cancel does not always end ansible-playbook: one was seen left behind,
    orphaned and blocked on a pipe, after a SIGTERM during verify. A cancelled run must leave
    nothing running.
    """
    killed = []
    marker = (private_dir.rstrip(os.sep) + os.sep).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            pid = int(cmdline.parent.name)
            if pid != os.getpid() and marker in cmdline.read_bytes():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        except (OSError, ValueError):
            continue
    return killed


# The task Ansible puts first in a role with argument specs; it runs on the controller.
_ARGUMENT_CHECK_ACTIONS = frozenset({"validate_argument_spec", "ansible.builtin.validate_argument_spec"})


class _Collector:
    def __init__(self, on_task: Callable[[TaskEvent], None] | None):
        self.on_task = on_task
        # Filled as the events come; the status is ansible-runner's once the run ends.
        self.result = PlaybookResult(status="running", reports={})
        self.saw_stats = False

    def handle(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if kind == "playbook_on_stats":
            self.saw_stats = True
            self.result.reports = dict((data.get("artifact_data") or {}).get("djdeploy_hosts") or {})
        elif kind == "runner_on_start" and "host" in data:
            self.result.in_flight[data["host"]] = data.get("task", "")
        elif kind.startswith("runner_on_") and "host" in data:
            self._task_event(kind, data)
        # Keep no event files on disk: everything needed is taken here.
        return False

    def _task_event(self, kind: str, data: dict[str, Any]) -> None:
        host, task_result = data["host"], data.get("res") or {}
        status = {
            "runner_on_ok": "changed" if task_result.get("changed") else "ok",
            "runner_on_failed": "failed",
            "runner_on_skipped": "skipped",
            "runner_on_unreachable": "unreachable",
        }.get(kind)
        if status is None:
            return
        message = _reason(task_result) if status in ("failed", "unreachable") else ""
        if status == "changed":
            self.result.changed.add(host)
        if status == "unreachable":
            self.result.unreachable[host] = message
        elif status == "failed" and not data.get("ignore_errors"):
            self.result.failures[host] = message
            if data.get("task_action") in _ARGUMENT_CHECK_ACTIONS:
                self.result.refused_inputs[host] = message
        if self.on_task:
            self.on_task(TaskEvent(host, data.get("task", ""), status, message))


def _reason(result: dict[str, Any]) -> str:
    """Why a task failed or its host was unreachable; for a loop, the first item's reason, not
    Ansible's "All items completed"."""
    items = [item for item in result.get("results") or [] if isinstance(item, dict)
             and (item.get("failed") or item.get("unreachable"))]
    return str((items[0] if items else result).get("msg", ""))
