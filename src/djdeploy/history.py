"""A host's djdeploy history, as plain data: which entry a rollback goes back to, which entries
retention may remove, and what each entry changed. Pure functions; the role reads the entries
on the host (library/gunicorn_history.py) and calls these through its filter plugin, and the
`history` command formats what they return.

An entry is the `meta.json` of one directory under the history dir: id, time, who, command,
kind (baseline, tune, rollback), previous (the entry that was live when it was made), settings,
verdict (pending, good, rolled_back, refused) and, for a rollback, `restores`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from djdeploy.errors import DjdeployError, ExitCode

BASELINE_SUFFIX = "-baseline"
# Only an entry that served after a verify can be put back live.
RESTORABLE = ("good",)
DEFAULT_KEEP = 20
MIN_KEEP = 2  # the live entry and the one before it, so a rollback always has a target


def ordered(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first. Ids start with the run's UTC time; a run's baseline comes before its entry."""

    def key(entry: Mapping[str, Any]) -> tuple[str, int]:
        entry_id = str(entry.get("id", ""))
        if entry_id.endswith(BASELINE_SUFFIX):
            return entry_id[: -len(BASELINE_SUFFIX)], 0
        return entry_id, 1

    return [dict(entry) for entry in sorted(entries, key=key)]


def expected_settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a verify may demand after restoring the entry. A baseline (or a rollback to
    one) holds only what could be observed of a hand-made config, so nothing is demanded."""
    if not entry.get("settings_known", entry.get("kind") != "baseline"):
        return {}
    return dict(entry.get("settings") or {})


def config_directories_to_remove(entry: Mapping[str, Any], config_path: str) -> list[str]:
    """The directories to remove, each only if it is empty, when `entry` is put back: those above
    `config_path` that its state did not have, the deepest first.

    A baseline records them (`config_directories_missing`) when djdeploy found no config, and a
    rollback to it copies them, so the host ends as it was found: without the directory djdeploy
    made for its config. An entry with a config needs them all; a directory the entry does not
    name, or one that is not above the config, is never removed.
    """
    if entry.get("config_present") is not False:
        return []
    recorded = {str(PurePosixPath(path)) for path in entry.get("config_directories_missing") or []}
    above = [str(directory) for directory in PurePosixPath(config_path).parents if directory.name]
    return [directory for directory in above if directory in recorded]


def unfinished_run(entries: Sequence[Mapping[str, Any]], live: str | None, lkg: str | None) -> dict[str, Any] | None:
    """The entry of a run that was cut off before it committed or undid its change, or None.

    A run points LIVE at its entry before it writes a file, and moves LKG there (commit) or
    LIVE back (rollback) only at the end: LIVE != LKG means it never got there."""
    if not live or not lkg or live == lkg:
        return None
    for entry in entries:
        if entry.get("id") == live:
            return dict(entry)
    return {"id": live, "verdict": "unreadable"}


def abandoned(entries: Sequence[Mapping[str, Any]], live: str | None) -> list[dict[str, Any]]:
    """Entries still `pending` that are not live: runs cut off after their backup and before
    they pointed LIVE at their entry, so they never went live. Only a run holding the lock
    asks, so no run is writing one of them meanwhile."""
    return [dict(entry) for entry in entries if entry.get("verdict") == "pending" and entry.get("id") != live]


def rollback_target(
    entries: Sequence[Mapping[str, Any]],
    live: str | None,
    lkg: str | None,
    to: str | None = None,
) -> dict[str, Any]:
    """The entry `djdeploy rollback` restores: `to` if given, else the last-known-good entry
    before the live one. Refuses (exit 2) when there is nothing to restore."""
    by_id = {entry["id"]: dict(entry) for entry in entries if "id" in entry}
    if not by_id or not lkg:
        raise DjdeployError("this host has no djdeploy history: there is nothing to roll back to; nothing changed")
    if to:
        return _requested(by_id, to)
    if live != lkg or live not in by_id:
        # The host runs a config that never passed verify (an interrupted run): the
        # last-known-good one is the way back.
        return _restorable(by_id, lkg, "the last-known-good entry")
    current = by_id[live]
    for candidate in _earlier(ordered(by_id.values()), current, by_id):
        if candidate.get("verdict") in RESTORABLE and _content(candidate) != _content(current):
            return candidate
    raise DjdeployError(
        f"nothing to roll back to: the live entry {live} is the oldest good config in the history; nothing changed",
        fix="see `djdeploy history HOST`",
    )


def _requested(by_id: Mapping[str, dict[str, Any]], to: str) -> dict[str, Any]:
    if to not in by_id:
        restorable = [e["id"] for e in ordered(by_id.values()) if e.get("verdict") in RESTORABLE]
        raise DjdeployError(
            f"--to {to}: no such entry in this host's history; nothing changed",
            fix=f"entries that can be restored: {', '.join(restorable) or 'none'}",
        )
    return _restorable(by_id, to, f"--to {to}")


def _restorable(by_id: Mapping[str, dict[str, Any]], entry_id: str, what: str) -> dict[str, Any]:
    entry = by_id.get(entry_id)
    if entry is None:
        raise DjdeployError(f"{what} ({entry_id}) is missing from the history; nothing changed",
                            ExitCode.NEEDS_PERSON)
    if entry.get("verdict") not in RESTORABLE:
        raise DjdeployError(
            f"{what}: entry {entry_id} is {entry.get('verdict', 'unreadable')}, it never served; nothing changed",
            fix="roll back to an entry whose verdict is good (see `djdeploy history HOST`)",
        )
    return entry


def _earlier(
    oldest_first: list[dict[str, Any]], current: Mapping[str, Any], by_id: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The entries that were live before `current`, newest first: its chain of `previous`
    pointers, then (where retention cut the chain) every older entry by time."""
    chain: list[dict[str, Any]] = []
    seen = {current["id"]}
    entry: Mapping[str, Any] | None = current
    while entry is not None and entry.get("previous") in by_id and entry["previous"] not in seen:
        entry = by_id[entry["previous"]]
        seen.add(entry["id"])
        chain.append(entry)
    position = next(i for i, e in enumerate(oldest_first) if e["id"] == current["id"])
    older = [e for e in reversed(oldest_first[:position]) if e["id"] not in seen]
    return chain + older


def _content(entry: Mapping[str, Any]) -> tuple[Any, Any]:
    return entry.get("config_sha256"), entry.get("unit_sha256")


def prunable(entries: Sequence[Mapping[str, Any]], keep: int, protected: Sequence[str | None]) -> list[str]:
    """The ids retention removes so that at most `keep` entries remain: the oldest first, never
    a protected one (the live, the last-known-good and the entry being written)."""
    if isinstance(keep, bool) or int(keep) < MIN_KEEP:
        raise DjdeployError(f"gunicorn_history_keep is {keep!r}: it must be a number of entries, at least {MIN_KEEP}")
    removable = [e["id"] for e in ordered(entries) if e.get("id") not in set(protected)]
    excess = len(entries) - int(keep)
    return removable[: max(excess, 0)]


def changed_settings(entry: Mapping[str, Any], by_id: Mapping[str, Mapping[str, Any]]) -> dict[str, list[Any]]:
    """{name: [before, after]} against the entry that was live before it; before is None where it
    is not known (a baseline records only what could be observed)."""
    previous = by_id.get(entry.get("previous") or "")
    if previous is None:
        return {}
    before, after = previous.get("settings") or {}, entry.get("settings") or {}
    return {
        name: [before.get(name), after.get(name)]
        for name in sorted(set(before) | set(after))
        if name in after and before.get(name) != after.get(name)
    }


def rows(history: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every entry, newest first (as `djdeploy history` prints them), with what it changed and
    whether it is live or last-known-good."""
    entries = ordered(history.get("entries") or [])[::-1]
    by_id = {entry["id"]: entry for entry in entries if "id" in entry}
    return [
        {
            "id": entry.get("id"),
            "time": entry.get("time"),
            "who": entry.get("who"),
            "command": entry.get("command"),
            "kind": entry.get("kind"),
            "restores": entry.get("restores"),
            "verdict": entry.get("verdict", "unreadable"),
            "failure": entry.get("failure"),
            "changed": changed_settings(entry, by_id),
            "live": entry.get("id") == history.get("live"),
            "last_known_good": entry.get("id") == history.get("lkg"),
        }
        for entry in entries
    ]
