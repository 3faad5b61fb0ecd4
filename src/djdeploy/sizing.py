"""Facts about a host in, Gunicorn settings out, each with a reason a person can read.

This is the only place djdeploy does sizing arithmetic. The Ansible role gathers facts,
a thin filter plugin calls ``plan``, and templates only print what comes back: nothing
is computed twice, so the config header, the CLI report and the running config agree.
Same facts and options, same plan, always.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, TypedDict, cast

from djdeploy.errors import DjdeployError, type_name
from djdeploy.gunicorn_settings import GTHREAD_WORKER_CLASSES, SETTINGS, validate_settings

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_WORKER_MEMORY_BYTES",
    "FACT_NAMES",
    "OPTION_NAMES",
    "Plan",
    "check_options",
    "format_mib",
    "plan",
]

MIB = 1024 * 1024
DEFAULT_WORKER_MEMORY_BYTES = 64 * MIB
DEFAULT_MEMORY_RESERVE_FRACTION = 0.2
DEFAULT_BIND = ("127.0.0.1:8000",)
DEFAULT_OVERRIDE_SOURCE = "overrides"
# cgroup v1 reports "no limit" as 2**63 rounded down to a page, and v2 hosts sometimes echo
# it; nothing real comes close to an exbibyte, so anything from here up means "no limit".
UNLIMITED_MEMORY_BYTES = 2**60
MAX_PLAUSIBLE_BYTES = 2**60
MAX_PLAUSIBLE_CPUS = 65536
MAX_WORKERS = cast(int, SETTINGS["workers"].maximum)

Profile = Literal["cpu", "io", "mixed"]
PreloadChoice = Literal["auto", True, False]
# (worker_class, threads, why): sync for CPU-bound apps avoids GIL contention between
# threads; I/O-bound apps overlap database and network waits with threads instead.
_PROFILES: Mapping[str, tuple[str, int, str]] = {
    "cpu": ("sync", 1, "profile cpu: CPU-bound requests gain nothing from threads sharing the GIL"),
    "io": ("gthread", 4, "profile io: threads overlap time spent waiting on the database and network"),
    "mixed": ("gthread", 2, "profile mixed: a second thread overlaps I/O waits without much GIL contention"),
}

FACT_NAMES = (
    "cgroup_memory_inactive_file_bytes",
    "cgroup_memory_limit_bytes",
    "cgroup_memory_usage_bytes",
    "cpu_quota",
    "cpus_affinity",
    "cpus_online",
    "gunicorn_pss_total_bytes",
    "mem_available_bytes",
    "mem_total_bytes",
    "worker_anonymous_bytes",
    "workers_measured",
)
OPTION_NAMES = (
    "bind",
    "db_hosts_sharing",
    "db_max_connections",
    "default_worker_memory_bytes",
    "earlier_overrides",
    "kept",
    "memory_reserve_fraction",
    "override_source",
    "overrides",
    "preload_app",
    "profile",
)
MAX_PLAUSIBLE_PROCESSES = 2**22  # the kernel's pid_max ceiling


class Plan(TypedDict):
    """What ``plan`` returns; every part is JSON-able, keys sorted."""

    settings: dict[str, object]
    reasons: dict[str, str]
    inputs: dict[str, object]
    warnings: list[str]


def plan(facts: Mapping[str, Any], options: Mapping[str, Any]) -> Plan:
    """Size Gunicorn for one host and explain every setting.

    Raises DjdeployError naming the culprit when a fact or option is invalid, when memory
    cannot fit a single worker, or when the database budget leaves this host no connection.
    """
    host = _read_facts(facts)
    opts, overrides = _checked_options(options)
    warnings = _fact_warnings(host, opts)
    memory = _memory_budget(host, opts)
    database = _database_budget(opts)
    # What the user pinned: this run's overrides, else the settings kept from their own config.
    pinned = {**opts.kept, **overrides}
    set_by = {name: f"kept from {source}" for name, source in opts.kept_from.items()}
    set_by.update({name: f"set by {opts.override_source}" for name in overrides})
    decided = _concurrency(opts.profile, pinned, set_by)
    decided.update(_workers(_usable_cpus(host), memory, database, decided, pinned, set_by, warnings))
    decided.update(_fixed_settings(opts))
    decided["preload_app"] = _preload(opts.preload_app)
    decided.update(_recycling(pinned, set_by))
    decided.update({name: _Decided(value, set_by[name]) for name, value in pinned.items()})
    warnings.extend(_worker_class_warnings(decided, database))
    if decided["preload_app"].value is False:
        warnings.append(
            "preload_app=False: every worker loads the app itself and shares no memory with the others; at a "
            "HUP the old workers serve until the new ones are warm, and at a restart a warm bridge master does, "
            "but where no bridge can start (the first restart, a bind change) requests wait for that import"
        )
    settings = validate_settings({name: d.value for name, d in decided.items()}, source=opts.override_source)
    warnings.extend(_public_bind_warnings(cast(list[str], settings["bind"])))
    warnings.extend(_undone_override_warnings(opts.earlier_overrides, settings))
    return {
        "settings": settings,
        "reasons": {name: f"{name}={_shown(settings[name])}: {decided[name].why}" for name in settings},
        "inputs": host.as_dict(),
        "warnings": warnings,
    }


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse the options ``plan`` would refuse without needing a host's facts: the role checks
    them before it takes the host's lock or looks at the host."""
    opts, _ = _checked_options(options)
    _database_budget(opts)


def _checked_options(options: Mapping[str, Any]) -> tuple[_Options, dict[str, object]]:
    opts = _read_options(options)
    return opts, validate_settings(opts.overrides, source=opts.override_source)


def format_mib(size_bytes: int | float | Fraction) -> str:
    """Bytes as MiB with at most one decimal ("38 MiB", "819.2 MiB"), the unit of every reason."""
    if 0 < size_bytes < MIB / 10:
        return f"{int(size_bytes)} bytes"  # "0 MiB each" would hide a nonsense input
    tenths = round(Fraction(size_bytes) * 10 / MIB)
    whole, tenth = divmod(tenths, 10)
    return f"{whole} MiB" if tenth == 0 else f"{whole}.{tenth} MiB"


# --- facts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _HostFacts:
    """The normalized facts; ``as_dict`` is what the config header records."""

    cpus_affinity: int
    cpu_quota: float | None
    cpus_online: int
    mem_total_bytes: int
    mem_available_bytes: int
    cgroup_memory_limit_bytes: int | None
    cgroup_memory_usage_bytes: int | None
    cgroup_memory_inactive_file_bytes: int | None
    worker_anonymous_bytes: int | None
    workers_measured: int
    gunicorn_pss_total_bytes: int

    def as_dict(self) -> dict[str, object]:
        return dict(sorted(dataclasses.asdict(self).items()))


def _read_facts(facts: Mapping[str, Any]) -> _HostFacts:
    _check_names(facts, FACT_NAMES, what="host fact")
    workers_measured = _int(facts, "workers_measured", minimum=0, maximum=MAX_PLAUSIBLE_PROCESSES, what="host fact")
    return _HostFacts(
        cpus_affinity=_int(facts, "cpus_affinity", minimum=1, maximum=MAX_PLAUSIBLE_CPUS, what="host fact"),
        cpu_quota=_cpu_quota(facts),
        cpus_online=_int(facts, "cpus_online", minimum=1, maximum=MAX_PLAUSIBLE_CPUS, what="host fact"),
        mem_total_bytes=_byte_fact(facts, "mem_total_bytes", minimum=1),
        mem_available_bytes=_byte_fact(facts, "mem_available_bytes"),
        cgroup_memory_limit_bytes=_cgroup_limit(facts),
        cgroup_memory_usage_bytes=_optional_int(
            facts, "cgroup_memory_usage_bytes", maximum=MAX_PLAUSIBLE_BYTES, what="host fact"
        ),
        cgroup_memory_inactive_file_bytes=_optional_int(
            facts, "cgroup_memory_inactive_file_bytes", maximum=MAX_PLAUSIBLE_BYTES, what="host fact"
        ),
        worker_anonymous_bytes=_worker_anonymous(facts, workers_measured),
        workers_measured=workers_measured,
        gunicorn_pss_total_bytes=_byte_fact(facts, "gunicorn_pss_total_bytes"),
    )


def _byte_fact(facts: Mapping[str, Any], name: str, *, minimum: int = 0) -> int:
    return _int(facts, name, minimum=minimum, maximum=MAX_PLAUSIBLE_BYTES, what="host fact")


def _cpu_quota(facts: Mapping[str, Any]) -> float | None:
    quota = _present(facts, "cpu_quota", what="host fact")
    if quota is None:
        return None
    if isinstance(quota, bool) or not isinstance(quota, (int, float)) or not math.isfinite(quota) or quota <= 0:
        raise _invalid("host fact", "cpu_quota", "a positive number of cores or null (no quota)", quota)
    return float(quota)


def _cgroup_limit(facts: Mapping[str, Any]) -> int | None:
    limit = _optional_int(facts, "cgroup_memory_limit_bytes", what="host fact")
    return None if limit is None or limit >= UNLIMITED_MEMORY_BYTES else limit


def _worker_anonymous(facts: Mapping[str, Any], workers_measured: int) -> int | None:
    """A mean over the workers measured: null exactly when there were none."""
    anonymous = _present(facts, "worker_anonymous_bytes", what="host fact")
    if workers_measured == 0 and anonymous is not None:
        raise _invalid("host fact", "worker_anonymous_bytes", "null when workers_measured is 0", anonymous)
    if workers_measured > 0 and anonymous is None:
        raise _invalid("host fact", "worker_anonymous_bytes", "an integer when workers_measured is above 0", anonymous)
    return _optional_int(facts, "worker_anonymous_bytes", minimum=1, maximum=MAX_PLAUSIBLE_BYTES, what="host fact")


# --- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    profile: Profile
    default_worker_memory_bytes: int
    memory_reserve_fraction: float
    db_max_connections: int | None
    db_hosts_sharing: int
    bind: list[str]
    bind_is_default: bool
    overrides: Mapping[str, object]
    override_source: str
    kept: Mapping[str, object]
    kept_from: Mapping[str, str]
    earlier_overrides: Mapping[str, object]
    preload_app: PreloadChoice


def _read_options(options: Mapping[str, Any]) -> _Options:
    _check_names(options, OPTION_NAMES, what="sizing option")
    # null means "use the default", so a role can pass its unset variables straight through.
    given = {name: value for name, value in options.items() if value is not None}
    defaults = {
        "bind": list(DEFAULT_BIND),
        "db_hosts_sharing": 1,
        "default_worker_memory_bytes": DEFAULT_WORKER_MEMORY_BYTES,
        "memory_reserve_fraction": DEFAULT_MEMORY_RESERVE_FRACTION,
        "override_source": DEFAULT_OVERRIDE_SOURCE,
        "overrides": {},
        "kept": {},
        "earlier_overrides": {},
        "preload_app": "auto",
        "profile": "mixed",
    }
    merged = {**defaults, **given}
    return _Options(
        profile=_profile(merged["profile"]),
        default_worker_memory_bytes=_int(
            merged, "default_worker_memory_bytes", minimum=1, maximum=MAX_PLAUSIBLE_BYTES, what="sizing option"
        ),
        memory_reserve_fraction=_reserve_fraction(merged["memory_reserve_fraction"]),
        db_max_connections=_optional_int(merged, "db_max_connections", minimum=1, what="sizing option"),
        db_hosts_sharing=_int(merged, "db_hosts_sharing", minimum=1, what="sizing option"),
        bind=_bind(merged["bind"]),
        bind_is_default="bind" not in given,
        overrides=_overrides(merged["overrides"]),
        override_source=_override_source(merged["override_source"]),
        **_kept(merged["kept"]),
        earlier_overrides=_overrides(merged["earlier_overrides"]),
        preload_app=_preload_choice(merged["preload_app"]),
    )


def _profile(value: object) -> Profile:
    if isinstance(value, str) and value in _PROFILES:
        return cast(Profile, str.__str__(value))
    raise _invalid("sizing option", "profile", "one of cpu, io, mixed", value)


def _preload_choice(value: object) -> PreloadChoice:
    if value is True or value is False or value == "auto":
        return cast(PreloadChoice, value)
    raise _invalid("sizing option", "preload_app", "auto, true or false", value)


def _reserve_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise _invalid("sizing option", "memory_reserve_fraction", "a number from 0 up to (not including) 1", value)
    return float(value)


def _bind(value: object) -> list[str]:
    bind = validate_settings({"bind": value}, source="sizing option bind")["bind"]
    return cast(list[str], bind)


def _overrides(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _invalid("sizing option", "overrides", "a mapping of gunicorn setting names to values", value)
    return value


def _kept(value: object) -> dict[str, Any]:
    """The sized settings the user set in their own config, each {"value": ..., "from": "where"}."""
    if not isinstance(value, Mapping) or not all(
        isinstance(item, Mapping) and set(item) == {"value", "from"} and _is_short_text(item["from"])
        for item in value.values()
    ):
        raise _invalid("sizing option", "kept", 'a mapping of setting names to {"value": ..., "from": "where"}', value)
    values = validate_settings({name: item["value"] for name, item in value.items()}, source="your config")
    return {"kept": values, "kept_from": {name: str.__str__(value[name]["from"]) for name in values}}


def _is_short_text(value: object) -> bool:
    return isinstance(value, str) and bool(value) and value.isprintable() and len(value) <= 200


def _override_source(value: object) -> str:
    if not isinstance(value, str) or not value or not value.isprintable() or len(value) > 100:
        raise _invalid("sizing option", "override_source", "short printable text such as '--set'", value)
    return str.__str__(value)


# --- shared checks for facts and options -------------------------------------------------


def _check_names(given: Mapping[str, Any], known: tuple[str, ...], *, what: str) -> None:
    if not isinstance(given, Mapping):
        raise DjdeployError(f"{what}s must be a mapping, got {type_name(given)}")
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DjdeployError(f"unknown {what} {name!r}{hint}", fix=f"known {what}s: {', '.join(known)}")
    if what == "host fact":
        missing = [name for name in known if name not in given]
        if missing:
            raise DjdeployError(
                f"missing host fact {missing[0]!r}",
                fix="the role must gather every fact; use null where a fact does not apply",
            )


def _present(values: Mapping[str, Any], name: str, *, what: str) -> object:
    if name not in values:
        raise DjdeployError(f"missing {what} {name!r}")
    return values[name]


def _int(values: Mapping[str, Any], name: str, *, minimum: int, maximum: int | None = None, what: str) -> int:
    value = _present(values, name, what=what)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(what, name, "an integer", value)
    if value < minimum or (maximum is not None and value > maximum):
        limits = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise _invalid(what, name, f"an integer {limits}", value)
    return int(value)


def _optional_int(
    values: Mapping[str, Any], name: str, *, minimum: int = 0, maximum: int | None = None, what: str
) -> int | None:
    if values.get(name) is None:
        return None
    return _int(values, name, minimum=minimum, maximum=maximum, what=what)


def _invalid(what: str, name: str, expected: str, got: object) -> DjdeployError:
    shown = repr(got)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return DjdeployError(f"{what} {name} must be {expected}, got {type_name(got)} {shown}")


# --- derived quantities ------------------------------------------------------------------


def _usable_cpus(host: _HostFacts) -> tuple[int, str]:
    """CPUs this service may really use: the affinity mask, further capped by a CFS quota.

    A quota of 1.5 cores still lets 2 workers make progress, so it rounds up; rounding to
    micro-cores first keeps float noise (2.0000000001) from adding a whole CPU.
    """
    cpus = max(1, host.cpus_affinity)
    if host.cpu_quota is None:
        return cpus, _cpus_text(cpus)
    by_quota = max(1, math.ceil(round(host.cpu_quota, 6)))
    if by_quota >= cpus:
        return cpus, _cpus_text(cpus)
    return by_quota, f"{_cpus_text(by_quota)} (CPU quota {host.cpu_quota:g} of {_cpus_text(cpus)}, rounded up)"


def _cpus_text(count: int) -> str:
    return f"{count} CPU{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class _MemoryBudget:
    """Memory the workers may use, and what one worker is taken to need."""

    headroom: int  # the tighter of host and cgroup headroom, before the reserve
    headroom_terms: str  # the figures the headroom is computed from
    budget: int  # headroom minus the reserve; workers × per_worker must fit in it
    reserve_fraction: float
    per_worker: int
    workers_measured: int  # 0: per_worker is assumed

    @property
    def worker_cap(self) -> int:
        return self.budget // self.per_worker

    def each(self) -> str:
        size = format_mib(self.per_worker)
        if self.workers_measured == 0:
            return f"{size} each (assumed: no running worker to measure)"
        plural = "" if self.workers_measured == 1 else "s"
        return f"{size} each (anonymous memory, mean of {self.workers_measured} worker{plural})"

    def allows(self, count: int, *, only: bool = False) -> str:
        return f"memory allows {'only ' if only else ''}{count} at {self.each()}"

    def describe(self) -> str:
        kept = _percent(1 - Fraction(repr(self.reserve_fraction)))
        return f"budget {format_mib(self.budget)} = {kept} of {format_mib(self.headroom)}: {self.headroom_terms}"


def _memory_budget(host: _HostFacts, opts: _Options) -> _MemoryBudget:
    """Memory available to Gunicorn once it is restarted, minus the reserve.

    What the running Gunicorn holds (gunicorn_pss_total_bytes) comes back when its workers
    are replaced, so it counts as available: the headroom is then the same whatever Gunicorn
    runs now, and a tune right after a tune finds the same. A cgroup limit, when set, may be
    tighter than the host. The reserve fraction is kept for the OS, page cache and request spikes.
    """
    returned = host.gunicorn_pss_total_bytes
    running = f"running gunicorn {format_mib(returned)}"
    headroom = host.mem_available_bytes + returned
    terms = f"MemAvailable {format_mib(host.mem_available_bytes)} + {running}"
    if host.cgroup_memory_limit_bytes is not None:
        used, used_terms = _cgroup_used(host)
        left = host.cgroup_memory_limit_bytes - used + returned
        if left < headroom:
            headroom = max(0, left)
            terms = f"cgroup limit {format_mib(host.cgroup_memory_limit_bytes)} − {used_terms} + {running}"
            terms += ", nothing left" if left < 0 else ""
    # Fraction(repr(0.2)) is exactly 1/5, so 1 GiB × 0.8 is exactly 819.2 MiB, not a hair less.
    budget = math.floor(headroom * (1 - Fraction(repr(opts.memory_reserve_fraction))))
    # A worker's anonymous memory (heap, stacks, Python objects; in RAM or swapped out) is the
    # same with or without preload and whatever the number of workers: preload shares those
    # pages with the master only until a worker writes them, and Python writes reference counts
    # as it serves. PSS or private memory would be measured before the change and differ after it.
    per_worker = host.worker_anonymous_bytes or opts.default_worker_memory_bytes
    return _MemoryBudget(headroom, terms, budget, opts.memory_reserve_fraction, per_worker, host.workers_measured)


def _cgroup_used(host: _HostFacts) -> tuple[int, str]:
    """Memory the cgroup really uses, and its figures.

    Its usage counts page cache, which the kernel reclaims before it refuses memory: the
    inactive file pages are the cache it reclaims first, so they are not usage (usage minus
    them is the cgroup's working set). Counting them would size fewer workers on a host that
    merely read files, and more once the cache aged out.
    """
    if host.cgroup_memory_usage_bytes is None:
        return 0, "usage unknown"
    usage = host.cgroup_memory_usage_bytes
    if host.cgroup_memory_inactive_file_bytes is None:
        return usage, f"usage {format_mib(usage)}"
    # Read from two files one after the other, so the cache may have grown past the usage read first.
    working_set = max(0, usage - host.cgroup_memory_inactive_file_bytes)
    inactive = format_mib(host.cgroup_memory_inactive_file_bytes)
    terms = f"working set {format_mib(working_set)} (usage {format_mib(usage)} − inactive file cache {inactive})"
    return working_set, terms


@dataclass(frozen=True)
class _DatabaseBudget:
    """This host's share of the database's connections; each worker thread may hold one."""

    max_connections: int
    hosts_sharing: int

    @property
    def per_host(self) -> int:
        return self.max_connections // self.hosts_sharing

    def describe(self) -> str:
        if self.hosts_sharing == 1:
            return f"{self.per_host} database connections"
        return f"{self.max_connections} database connections ÷ {self.hosts_sharing} hosts = {self.per_host} per host"


def _database_budget(opts: _Options) -> _DatabaseBudget | None:
    if opts.db_max_connections is None:
        return None
    database = _DatabaseBudget(opts.db_max_connections, opts.db_hosts_sharing)
    if database.per_host < 1:
        raise DjdeployError(
            f"the database budget leaves this host no connection: {database.describe()}, "
            "and even 1 worker × 1 thread needs one",
            fix="raise db_max_connections or lower db_hosts_sharing",
        )
    return database


# --- decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decided:
    value: object
    why: str


def _concurrency(profile: Profile, overrides: Mapping[str, object], set_by: Mapping[str, str]) -> dict[str, _Decided]:
    """worker_class and threads from the profile, unless the user pinned either.

    Pinning one implies the other: threads > 1 needs gthread, and a non-threaded worker
    class runs one thread. Filling in the partner avoids a contradiction the user never wrote.
    """
    profile_class, profile_threads, profile_why = _PROFILES[profile]
    pinned_threads = overrides.get("threads")
    if "worker_class" in overrides:
        worker_class = _Decided(overrides["worker_class"], set_by["worker_class"])
    elif isinstance(pinned_threads, int) and pinned_threads > 1 and profile_class not in GTHREAD_WORKER_CLASSES:
        worker_class = _Decided("gthread", f"threads={pinned_threads} {set_by['threads']} needs the threaded worker")
    else:
        worker_class = _Decided(profile_class, profile_why)
    if pinned_threads is not None:
        threads = _Decided(pinned_threads, set_by["threads"])
    elif worker_class.value not in GTHREAD_WORKER_CLASSES:
        threads = _Decided(1, f"worker_class {worker_class.value} runs one thread per worker")
    else:
        threads = _Decided(profile_threads, profile_why)
    return {"worker_class": worker_class, "threads": threads}


def _workers(
    cpus: tuple[int, str],
    memory: _MemoryBudget,
    database: _DatabaseBudget | None,
    decided: Mapping[str, _Decided],
    overrides: Mapping[str, object],
    set_by: Mapping[str, str],
    warnings: list[str],
) -> dict[str, _Decided]:
    """workers (and threads, if the database forces it): CPUs, then memory, then database."""
    threads = decided["threads"]
    thread_count = threads.value
    assert isinstance(thread_count, int)  # validated, or from _PROFILES
    if "workers" in overrides:
        workers = overrides["workers"]
        assert isinstance(workers, int)  # validated
        warnings.extend(_pinned_workers_warnings(workers, thread_count, memory, database, set_by["workers"]))
        return {"workers": _Decided(workers, set_by["workers"])}
    by_cpu, cpu_why = _cpu_workers(cpus)
    count, parts = _within_memory(by_cpu, memory)
    result: dict[str, _Decided] = {}
    if database is not None:
        count, database_why, fewer_threads = _within_database(count, thread_count, database)
        if fewer_threads is not None and "threads" in overrides:
            # The user pinned threads: keep them at one worker, and say what it risks.
            database_why = f"{database.describe()} fit less than one worker at {thread_count} threads"
            warnings.append(
                f"threads={thread_count} {set_by['threads']} needs {thread_count} connections per worker, "
                f"more than {database.describe()}; requests may fail with 'too many connections'"
            )
        elif fewer_threads is not None:
            result["threads"] = _Decided(
                fewer_threads, f"{threads.why}; reduced from {thread_count} to fit {database.describe()}"
            )
        parts.append(database_why)
    # Show the CPU arithmetic's result only when a cap changed it; otherwise it is the value.
    head = cpu_why if count == by_cpu or by_cpu == MAX_WORKERS else f"{cpu_why} = {by_cpu}"
    result["workers"] = _Decided(count, "; ".join([head, *parts]))
    return result


def _cpu_workers(cpus: tuple[int, str]) -> tuple[int, str]:
    """2 × CPUs + 1: a worker per CPU serving while another waits on I/O, plus one spare."""
    count, cpus_text = cpus
    by_cpu = 2 * count + 1
    if by_cpu > MAX_WORKERS:
        return MAX_WORKERS, f"{cpus_text} × 2 + 1 = {by_cpu}, capped at {MAX_WORKERS}"
    return by_cpu, f"{cpus_text} × 2 + 1"


def _within_memory(by_cpu: int, memory: _MemoryBudget) -> tuple[int, list[str]]:
    cap = memory.worker_cap
    if cap < 1:
        raise DjdeployError(
            f"memory cannot fit one gunicorn worker: {memory.describe()}, "
            f"less than one worker at {memory.each()}",
            fix="free memory, raise the cgroup memory limit, lower memory_reserve_fraction, or set workers explicitly",
        )
    if cap >= by_cpu:
        return by_cpu, [memory.allows(cap)]
    return cap, [memory.allows(cap, only=True), memory.describe()]


def _within_database(count: int, threads: int, database: _DatabaseBudget) -> tuple[int, str, int | None]:
    """Keep workers × threads within this host's connections: (workers, why, fewer threads or None).

    Workers go first, since each thread of each worker may hold a connection; but never
    below one worker: then threads shrink instead (per_host >= 1 is checked up front).
    """
    fitting = database.per_host // threads
    if fitting >= count:
        return count, f"{database.describe()} allow {fitting} at {threads} threads each", None
    if fitting >= 1:
        return fitting, f"{database.describe()} allow only {fitting} at {threads} threads each", None
    return 1, f"{database.describe()} allow only 1 worker at {database.per_host} threads", database.per_host


def _pinned_workers_warnings(
    workers: int, threads: int, memory: _MemoryBudget, database: _DatabaseBudget | None, set_by: str
) -> list[str]:
    """The user asked explicitly, so a pinned count stands; say what it risks."""
    warnings = []
    if workers > memory.worker_cap:
        warnings.append(
            f"workers={workers} {set_by} exceeds what memory allows "
            f"({memory.worker_cap} at {memory.each()}; {memory.describe()}); "
            "the host may swap or the kernel may kill workers"
        )
    if database is not None and workers * threads > database.per_host:
        warnings.append(
            f"workers={workers} {set_by} at {threads} threads each needs {workers * threads} "
            f"connections, more than {database.describe()}; requests may fail with 'too many connections'"
        )
    return warnings


def _fixed_settings(opts: _Options) -> dict[str, _Decided]:
    bind_why = (
        "localhost only; nginx on the same host proxies to it"
        if opts.bind_is_default
        else "from the bind option"
    )
    return {
        "timeout": _Decided(30, "a worker silent for 30 s is stuck; kill and restart it (gunicorn's default)"),
        "graceful_timeout": _Decided(30, "in-flight requests get as long to finish on restart as timeout allows"),
        "keepalive": _Decided(5, "nginx on the same host reuses connections; short, so idle ones don't hold workers"),
        "backlog": _Decided(2048, "pending connections queued while all workers are busy (gunicorn's default)"),
        "bind": _Decided(opts.bind, bind_why),
        "worker_tmp_dir": _Decided("/dev/shm", "heartbeat files on tmpfs, so a slow disk doesn't get workers killed"),
    }


def _preload(choice: PreloadChoice) -> _Decided:
    """Preload unless the user declared the app unsafe to load before fork.

    Preloading loads and warms the app once in the master: workers fork ready to serve and
    share its memory pages, and a HUP starts new ones without importing the app again. It is
    unsafe when the app opens sockets, threads or database connections at import (forked
    workers would share them), and it stops a HUP from loading new app code: neither can be
    seen from outside, so the user declares it (gunicorn_preload_app: false).
    """
    if choice is False:
        return _Decided(False, "declared unsafe to load before fork (gunicorn_preload_app: false); "
                               "each worker loads and warms the app before it accepts")
    why = "load and warm the app once in the master, so workers fork ready and share its memory pages"
    if choice is True:
        return _Decided(True, f"{why} (gunicorn_preload_app: true)")
    return _Decided(True, f"{why}; set gunicorn_preload_app: false if the app opens sockets, threads or "
                          "database connections at import, or if a HUP must load new code")


def _recycling(overrides: Mapping[str, object], set_by: Mapping[str, str]) -> dict[str, _Decided]:
    """Recycle workers to bound slow memory leaks; jitter so they don't all restart at once."""
    if "max_requests" in overrides:
        max_requests, max_why = overrides["max_requests"], set_by["max_requests"]
    else:
        max_requests, max_why = 1000, "recycle a worker after 1000 requests to bound slow memory leaks"
    assert isinstance(max_requests, int)  # validated
    jitter_why = f"10% of max_requests={max_requests}, so workers don't all restart at once"
    return {
        "max_requests": _Decided(max_requests, max_why),
        "max_requests_jitter": _Decided(max_requests // 10, jitter_why),
    }


# --- warnings ----------------------------------------------------------------------------


def _undone_override_warnings(earlier: Mapping[str, object], settings: Mapping[str, object]) -> list[str]:
    """An earlier tune's override that this run, not asked again, changes: say how to keep it."""
    return [
        f"{name}={_shown(value)} was set by an earlier tune's overrides and this tune changes it to "
        f"{_shown(settings[name])}; to keep it, pass --set {name}={_shown(value)} or put it in gunicorn_overrides"
        for name, value in sorted(earlier.items())
        if name in settings and _same_shape(value) != _same_shape(settings[name])
    ]


def _same_shape(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _fact_warnings(host: _HostFacts, opts: _Options) -> list[str]:
    warnings = []
    if host.worker_anonymous_bytes is None:
        warnings.append(
            f"no running worker to measure; assumed {format_mib(opts.default_worker_memory_bytes)} of memory per worker"
        )
    if host.cgroup_memory_limit_bytes is not None and host.cgroup_memory_usage_bytes is None:
        warnings.append("cgroup memory usage unknown; assumed 0 bytes used within the cgroup limit")
    elif host.cgroup_memory_limit_bytes is not None and host.cgroup_memory_inactive_file_bytes is None:
        warnings.append("cgroup inactive file cache unknown; the whole cgroup usage counted, page cache included")
    return warnings


def _worker_class_warnings(decided: Mapping[str, _Decided], database: _DatabaseBudget | None) -> list[str]:
    worker_class = decided["worker_class"].value
    if database is None or worker_class in GTHREAD_WORKER_CLASSES or worker_class == "sync":
        return []
    return [
        f"worker_class={worker_class}: the database budget assumes one connection per thread, "
        "but async workers may open one per connection (up to worker_connections each)"
    ]


def _public_bind_warnings(bind: list[str]) -> list[str]:
    """gunicorn belongs behind nginx on the same host: say so when it listens beyond it."""
    return [
        f"bind {address} is reachable from other hosts, bypassing nginx; "
        "bind 127.0.0.1, [::1] or a unix socket unless that is intended"
        for address in bind
        if not _is_local_address(address)
    ]


def _is_local_address(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface


# --- formatting --------------------------------------------------------------------------


def _percent(fraction: Fraction) -> str:
    tenths = round(fraction * 1000)
    whole, tenth = divmod(tenths, 10)
    return f"{whole}%" if tenth == 0 else f"{whole}.{tenth}%"


def _shown(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)
