"""History rules: which entry a rollback restores, which entries retention removes, what each
entry changed, and the module that reads the history on the host."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from djdeploy.errors import DjdeployError, ExitCode
from djdeploy.history import (
    abandoned,
    changed_settings,
    expected_settings,
    ordered,
    prunable,
    rollback_target,
    rows,
    unfinished_run,
)

MODULE = Path(__file__).resolve().parents[2] / "roles" / "gunicorn" / "library" / "gunicorn_history.py"


def entry(entry_id: str, previous: str | None = None, verdict: str = "good", kind: str = "tune",
          max_requests: int | None = None, **extra: Any) -> dict[str, Any]:
    settings = {"workers": 5, "max_requests": max_requests} if max_requests else {"workers": 1}
    content = f"{kind}-{max_requests}"
    return {"id": entry_id, "previous": previous, "verdict": verdict, "kind": kind, "settings": settings,
            "config_sha256": f"c-{content}", "unit_sha256": f"u-{content}", **extra}


BASE = entry("20261101T000000Z-aaaaaa-baseline", kind="baseline")
A = entry("20261101T000000Z-aaaaaa", BASE["id"], max_requests=1111)
B = entry("20261102T000000Z-bbbbbb", A["id"], max_requests=2222)
BAD = entry("20261103T000000Z-cccccc", B["id"], verdict="rolled_back", max_requests=3333)
# A rollback from B to A: its content is A's.
R1 = {**A, "id": "20261104T000000Z-dddddd", "previous": B["id"], "kind": "rollback", "restores": A["id"]}
R2 = {**B, "id": "20261105T000000Z-eeeeee", "previous": R1["id"], "kind": "rollback", "restores": B["id"]}


# --- ordering ---------------------------------------------------------------------------------

def test_entries_are_ordered_by_time_with_a_runs_baseline_before_its_change():
    assert [e["id"] for e in ordered([R2, B, A, BASE, R1])] == [BASE["id"], A["id"], B["id"], R1["id"], R2["id"]]


# --- rollback_target --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("entries", "live", "lkg", "to", "expected"),
    [
        # The last-known-good entry before the live one.
        ([BASE, A, B], B["id"], B["id"], None, A["id"]),
        ([BASE, A], A["id"], A["id"], None, BASE["id"]),
        # A failed change left the host on B: it is skipped, B's predecessor is the target.
        ([BASE, A, B, BAD], B["id"], B["id"], None, A["id"]),
        # Rolling back twice returns to where it began, and again.
        ([BASE, A, B, R1], R1["id"], R1["id"], None, B["id"]),
        ([BASE, A, B, R1, R2], R2["id"], R2["id"], None, R1["id"]),
        # The host runs an unverified config (interrupted run): back to the last-known-good one.
        ([BASE, A, B, BAD], BAD["id"], B["id"], None, B["id"]),
        # --to any good entry.
        ([BASE, A, B], B["id"], B["id"], A["id"], A["id"]),
        ([BASE, A, B], B["id"], B["id"], BASE["id"], BASE["id"]),
        # Retention removed the entry before the live one: the newest older good one is next.
        ([A, R1, R2], R2["id"], R2["id"], None, R1["id"]),
        ([BASE, B], B["id"], B["id"], None, BASE["id"]),
    ],
)
def test_the_rollback_target(entries, live, lkg, to, expected):
    assert rollback_target(entries, live, lkg, to)["id"] == expected


@pytest.mark.parametrize(
    ("entries", "live", "lkg", "to", "says"),
    [
        ([], None, None, None, "this host has no djdeploy history"),
        ([BAD], None, None, None, "this host has no djdeploy history"),
        ([BASE], BASE["id"], BASE["id"], None, f"the live entry {BASE['id']} is the oldest good config"),
        ([BASE, A, B, BAD], B["id"], B["id"], BAD["id"], f"entry {BAD['id']} is rolled_back, it never served"),
        ([BASE, A, B], B["id"], B["id"], "20200101T000000Z-ffffff", "--to 20200101T000000Z-ffffff: no such entry"),
        # The last-known-good pointer names an entry whose meta.json cannot be read.
        ([BASE, {"id": "x", "verdict": "unreadable"}], BASE["id"], "x", None, "entry x is unreadable"),
    ],
)
def test_the_rollback_refusals_name_why_and_change_nothing(entries, live, lkg, to, says):
    with pytest.raises(DjdeployError) as refused:
        rollback_target(entries, live, lkg, to)
    assert says in refused.value.message
    assert refused.value.exit_code == ExitCode.REFUSED


def test_an_unknown_entry_lists_the_ones_that_can_be_restored():
    with pytest.raises(DjdeployError) as refused:
        rollback_target([BASE, A, BAD], A["id"], A["id"], "nope")
    assert refused.value.fix == f"entries that can be restored: {BASE['id']}, {A['id']}"


def test_a_last_known_good_pointer_to_a_missing_entry_needs_a_person():
    with pytest.raises(DjdeployError) as refused:
        rollback_target([A, B], B["id"], "20261101T000000Z-gone00", None)
    assert refused.value.exit_code == ExitCode.NEEDS_PERSON


# --- expected_settings ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("given_entry", "expected"),
    [
        (A, A["settings"]),
        (BASE, {}),
        ({**BASE, "id": "r", "kind": "rollback", "settings_known": False}, {}),
        ({**A, "settings_known": True}, A["settings"]),
    ],
)
def test_verify_demands_only_settings_djdeploy_rendered(given_entry, expected):
    assert expected_settings(given_entry) == expected


# --- prunable ---------------------------------------------------------------------------------

def test_retention_removes_the_oldest_first():
    assert prunable([BASE, A, B, R1, R2], 3, [R2["id"], R2["id"]]) == [BASE["id"], A["id"]]


def test_retention_never_removes_a_protected_entry():
    assert prunable([BASE, A, B, R1, R2], 3, [R2["id"], BASE["id"]]) == [A["id"], B["id"]]
    assert prunable([BASE, A, B], 2, [BASE["id"], A["id"], B["id"]]) == []


@pytest.mark.parametrize("keep", [1, 0, -3, True, "2x"])
def test_retention_refuses_to_keep_too_few(keep):
    with pytest.raises((DjdeployError, ValueError)):
        prunable([A, B], keep, [])


@given(
    count=st.integers(min_value=0, max_value=30),
    keep=st.integers(min_value=2, max_value=25),
    protected_positions=st.lists(st.integers(min_value=0, max_value=29), max_size=3),
)
def test_retention_keeps_the_newest_and_every_protected_entry(count, keep, protected_positions):
    entries = [entry(f"202611{day:02d}T000000Z-{day:06x}") for day in range(1, count + 1)]
    ids = [e["id"] for e in entries]
    protected = [ids[p] for p in protected_positions if p < count]
    removed = prunable(entries, keep, protected)
    kept = [i for i in ids if i not in removed]
    assert not set(removed) & set(protected)
    assert len(kept) == max(min(count, keep), len(set(protected)))
    # Whatever is removed is older than whatever unprotected entry is kept.
    unprotected_kept = [i for i in kept if i not in protected]
    assert all(r < k for r in removed for k in unprotected_kept)


# --- changed_settings and rows ----------------------------------------------------------------

def test_what_an_entry_changed_is_against_the_entry_live_before_it():
    by_id = {e["id"]: e for e in (BASE, A, B, R1)}
    assert changed_settings(B, by_id) == {"max_requests": [1111, 2222]}
    assert changed_settings(R1, by_id) == {"max_requests": [2222, 1111]}
    # A baseline records only the worker count: the rest was not known before.
    assert changed_settings(A, by_id) == {"max_requests": [None, 1111], "workers": [1, 5]}
    assert changed_settings(BASE, by_id) == {}


def test_rows_are_newest_first_and_mark_the_live_and_last_known_good_entries():
    listed = rows({"entries": [B, A, BASE, BAD], "live": B["id"], "lkg": A["id"]})
    assert [(r["id"], r["live"], r["last_known_good"]) for r in listed] == [
        (BAD["id"], False, False), (B["id"], True, False), (A["id"], False, True), (BASE["id"], False, False)]
    assert listed[0]["verdict"] == "rolled_back"


# --- the module that reads the history on the host ----------------------------------------------

@pytest.fixture(scope="module")
def history_module():
    spec = importlib.util.spec_from_file_location("gunicorn_history", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_module_reads_entries_pointers_and_flags_unreadable_ones(history_module, tmp_path):
    for name, meta in ((A["id"], json.dumps(A)), (B["id"], "{not json"), (BAD["id"], None)):
        (tmp_path / name).mkdir()
        if meta is not None:
            (tmp_path / name / "meta.json").write_text(meta)
    (tmp_path / "LIVE").write_text(A["id"] + "\n")
    found = history_module.read_history(str(tmp_path))
    assert (found["exists"], found["live"], found["lkg"]) == (True, A["id"], None)
    by_id = {e["id"]: e for e in found["entries"]}
    assert by_id[A["id"]] == A
    assert by_id[B["id"]]["verdict"] == "unreadable" and "meta.json" in by_id[B["id"]]["failure"]
    assert by_id[BAD["id"]]["verdict"] == "unreadable"


def test_the_module_reports_a_missing_history(history_module, tmp_path):
    assert history_module.read_history(str(tmp_path / "none")) == {
        "exists": False, "entries": [], "live": None, "lkg": None}



# --- runs that did not finish -------------------------------------------------------------------

PENDING = entry("20261106T000000Z-ffffff", B["id"], verdict="pending", max_requests=4444)


@pytest.mark.parametrize(
    ("entries", "live", "lkg", "expected"),
    [
        # Committed (LKG moved) or rolled back (LIVE moved back): finished.
        ([BASE, A, B], B["id"], B["id"], None),
        ([BASE, A, B, BAD], B["id"], B["id"], None),
        # LIVE moved to the run's entry, LKG did not: cut off midway.
        ([BASE, A, B, PENDING], PENDING["id"], B["id"], PENDING),
        # Its meta.json never got written, or was lost: still found, by id.
        ([BASE, A, B], "20261107T000000Z-abcdef", B["id"], {"id": "20261107T000000Z-abcdef", "verdict": "unreadable"}),
        # No history yet.
        ([], None, None, None),
    ],
)
def test_a_run_that_did_not_finish_is_found_by_its_pointers(entries, live, lkg, expected):
    assert unfinished_run(entries, live, lkg) == expected


def test_entries_still_pending_but_never_live_were_abandoned():
    assert abandoned([BASE, A, B, PENDING], B["id"]) == [PENDING]
    assert abandoned([BASE, A, B, PENDING], PENDING["id"]) == []
    assert abandoned([BASE, A, B, BAD], B["id"]) == []
