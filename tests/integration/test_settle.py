"""A tune right after a tune computes the same settings, on a small host (1 CPU, 512 MiB).

Issue 18 saw such a host go from 2 workers to 3 on the second run: the cgroup's usage counted
the page cache, and the first run sized workers by their PSS before preload, the second after
it. Both runs here start from the lab's untuned host (one sync worker, no preload).
"""

from __future__ import annotations

from pathlib import Path

import json

import pytest
import yaml

from conftest import LabHosts, djdeploy, worker_pids

pytestmark = pytest.mark.lab

MIB = 1024 * 1024


def tune_twice(lab: LabHosts, inventory: Path | None = None) -> tuple[dict, dict]:
    """The records of web01 from a tune and from a tune right after it."""
    records = []
    for _ in range(2):
        done = djdeploy("tune", "web01", "-i", str(inventory or lab.inventory), "--json")
        record = json.loads(done.stdout)["hosts"]["web01"]
        assert done.returncode == 0, (record, done.stderr)
        records.append(record)
    return records[0], records[1]


def test_page_cache_is_not_usage_and_a_second_tune_is_unchanged(lab_factory):
    lab = lab_factory("--hosts", "1", "--cpus", "1", "--memory", "512M")
    # A file the host wrote stays in its page cache, charged to its 512 MiB until the kernel
    # needs the memory back: counted as used, it left room for 2 workers instead of 3.
    lab.sh("web01", "dd if=/dev/zero of=/var/tmp/cache bs=1M count=380 status=none && sync")
    first, second = tune_twice(lab)

    facts = first["facts"]
    assert facts["cgroup_memory_usage_bytes"] > 400 * MIB, facts
    assert facts["cgroup_memory_inactive_file_bytes"] > 300 * MIB, facts
    assert first["outcome"] == "applied"
    assert first["settings"]["workers"] == 3, first["reasons"]["workers"]
    assert first["reasons"]["workers"].startswith("workers=3: 1 CPU × 2 + 1; memory allows ")

    assert second["outcome"] == "unchanged", second["reasons"]
    assert second["settings"] == first["settings"]
    assert second["facts"]["workers_measured"] == 3
    assert len(worker_pids(lab)) == 3


def test_where_memory_binds_a_second_tune_is_unchanged(lab_factory, tmp_path: Path):
    """Memory, not the CPU, sets the workers here: the first tune measures one worker that
    loaded the app itself, the second three that share the preloaded app with the master."""
    lab = lab_factory("--hosts", "1", "--cpus", "1", "--memory", "512M")
    # Keeping 85% in reserve leaves room for about 2 workers of the demo app, below 1 CPU's 3.
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "hosts.yml").write_text(Path(lab.inventory).read_text())
    (tmp_path / "host_vars" / "web01.yml").write_text(yaml.safe_dump({"gunicorn_memory_reserve_fraction": 0.85}))
    first, second = tune_twice(lab, tmp_path)

    assert first["outcome"] == "applied"
    assert (first["previous"]["workers"], first["settings"]["preload_app"]) == (1, True)
    assert first["facts"]["workers_measured"] == 1
    workers = first["settings"]["workers"]
    assert workers == 2, first["reasons"]["workers"]
    assert f"memory allows only {workers} at " in first["reasons"]["workers"]
    assert "(anonymous memory, mean of 1 worker); budget " in first["reasons"]["workers"]

    assert second["outcome"] == "unchanged", second["reasons"]["workers"]
    assert second["facts"]["workers_measured"] == workers
    assert second["settings"] == first["settings"]
    assert f"memory allows only {workers} at " in second["reasons"]["workers"]
    assert len(worker_pids(lab)) == workers
