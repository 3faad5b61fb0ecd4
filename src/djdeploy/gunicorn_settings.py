"""The Gunicorn settings djdeploy manages or accepts as overrides, and their validation.

Every value that reaches a generated Gunicorn config or systemd unit passes through
``validate_settings`` first, whether it was computed by ``djdeploy.sizing``, typed on the
command line (``--set KEY=VALUE``) or read from host_vars. One catalogue, one set of rules:
a value that is refused here can never be written to a host.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from djdeploy.errors import DjdeployError, type_name

__all__ = [
    "GTHREAD_WORKER_CLASSES",
    "PLAIN_PATH",
    "Kind",
    "SETTINGS",
    "SettingSpec",
    "parse_override",
    "split_overrides",
    "validate_settings",
]


class Kind(StrEnum):
    """What shape of value a setting takes; decides parsing and checking.

    The values read as "<setting> takes ..." in error messages.
    """

    INT = "an integer"
    BOOL = "true or false"
    TEXT = "printable text"
    ABSOLUTE_PATH = "an absolute path"
    WORKER_CLASS = "sync, gthread or a dotted import path"
    CHOICE = "one of a fixed set of words"
    BIND_LIST = "a list of HOST:PORT, [IPv6]:PORT or unix:/absolute/path"
    LOG_TARGET = "'-' or an absolute path"
    ADDRESS_LIST = "'*' or comma-separated IP addresses or networks"


@dataclass(frozen=True)
class SettingSpec:
    """One row of the catalogue: enough to parse, check and explain a setting."""

    name: str
    kind: Kind
    description: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    # Only settings whose Gunicorn default is None may be reset to None (JSON null, or
    # an empty value on the command line), meaning "let Gunicorn decide".
    nullable: bool = False
    managed: bool = False  # computed by djdeploy.sizing when not overridden
    max_length: int = 1024

    @property
    def value_types(self) -> tuple[type, ...]:
        """The Python types a normalized value of this setting has."""
        base: tuple[type, ...] = {
            Kind.INT: (int,),
            Kind.BOOL: (bool,),
            Kind.BIND_LIST: (list,),
        }.get(self.kind, (str,))
        return base + ((type(None),) if self.nullable else ())


# Both spellings select Gunicorn's threaded worker; only it honours threads > 1.
GTHREAD_WORKER_CLASSES = frozenset({"gthread", "gunicorn.workers.gthread.ThreadWorker"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_REQUESTS_LIMIT = 10_000_000

_MANAGED_WORKER_CLASSES = ("sync", "gthread")
# Gunicorn imports any other worker class by name, so a string that is not a plain
# dotted Python path (e.g. "egg:..." or something with spaces/quotes) has no business here.
_DOTTED_IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_PORT = re.compile(r"[0-9]{1,5}")
# An absolute path that means the same to gunicorn, systemd and a shell: no spaces, quotes,
# backslashes, '$' or '%' (systemd's specifiers).
PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/+@-]*$")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
# How gunicorn names its settings; one this catalogue does not know goes to the host, whose
# gunicorn checks it with its own validator for its version.
_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
# The kernel's sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_UNIX_PATH_MAX_BYTES = 107
_MAX_BIND_ADDRESSES = 32
_TRUE_WORDS = frozenset({"true", "yes", "1"})
_FALSE_WORDS = frozenset({"false", "no", "0"})


def _catalogue(*specs: SettingSpec) -> Mapping[str, SettingSpec]:
    """Key the specs by name and freeze them: the catalogue is shared by every caller."""
    return MappingProxyType({spec.name: spec for spec in specs})


SETTINGS: Mapping[str, SettingSpec] = _catalogue(
    SettingSpec("workers", Kind.INT, "Worker processes serving requests.", minimum=1, maximum=256, managed=True),
    SettingSpec(
        "worker_class",
        Kind.WORKER_CLASS,
        "Worker type: sync or gthread, or another worker's dotted import path.",
        choices=_MANAGED_WORKER_CLASSES,
        managed=True,
        max_length=200,
    ),
    SettingSpec("threads", Kind.INT, "Threads per worker (gthread only).", minimum=1, maximum=64, managed=True),
    SettingSpec(
        "worker_connections",
        Kind.INT,
        "Simultaneous clients per async or gthread worker.",
        minimum=1,
        maximum=100_000,
    ),
    SettingSpec(
        "timeout",
        Kind.INT,
        "Seconds a silent worker may take before it is killed and restarted.",
        minimum=1,
        maximum=3600,
        managed=True,
    ),
    SettingSpec(
        "graceful_timeout",
        Kind.INT,
        "Seconds in-flight requests get to finish when workers restart.",
        minimum=1,
        maximum=3600,
        managed=True,
    ),
    SettingSpec(
        "keepalive",
        Kind.INT,
        "Seconds to wait for the next request on a keep-alive connection.",
        minimum=0,
        maximum=300,
        managed=True,
    ),
    SettingSpec(
        "max_requests",
        Kind.INT,
        "Requests a worker serves before it is recycled (0 = never).",
        minimum=0,
        maximum=MAX_REQUESTS_LIMIT,
        managed=True,
    ),
    SettingSpec(
        "max_requests_jitter",
        Kind.INT,
        "Random extra requests added to max_requests so workers do not recycle together.",
        minimum=0,
        maximum=MAX_REQUESTS_LIMIT,
        managed=True,
    ),
    SettingSpec("backlog", Kind.INT, "Pending connections the listen queue holds.", minimum=1, maximum=65535, managed=True),
    SettingSpec(
        "bind",
        Kind.BIND_LIST,
        "Sockets to listen on: HOST:PORT, [IPv6]:PORT or unix:/absolute/path.",
        managed=True,
    ),
    SettingSpec("preload_app", Kind.BOOL, "Load the application in the master before forking workers.", managed=True),
    SettingSpec(
        "worker_tmp_dir",
        Kind.ABSOLUTE_PATH,
        "Directory for the workers' heartbeat files.",
        nullable=True,
        managed=True,
    ),
    SettingSpec(
        "limit_request_line",
        Kind.INT,
        "Maximum size of the HTTP request line in bytes (0 = unlimited).",
        minimum=0,
        maximum=8190,
    ),
    SettingSpec(
        "limit_request_fields",
        Kind.INT,
        "Maximum number of HTTP header fields in a request.",
        minimum=0,
        maximum=32768,
    ),
    SettingSpec(
        "limit_request_field_size",
        Kind.INT,
        "Maximum size of one HTTP header field in bytes (0 = unlimited).",
        minimum=0,
        maximum=1_048_576,
    ),
    SettingSpec("proc_name", Kind.TEXT, "Process name shown by ps and top.", nullable=True, max_length=64),
    SettingSpec(
        "forwarded_allow_ips",
        Kind.ADDRESS_LIST,
        "Front-end addresses trusted to set X-Forwarded-* headers ('*' trusts all).",
        max_length=4096,
    ),
    SettingSpec("accesslog", Kind.LOG_TARGET, "Access log file, or '-' for stdout.", nullable=True),
    SettingSpec("errorlog", Kind.LOG_TARGET, "Error log file, or '-' for stderr."),
    SettingSpec("loglevel", Kind.CHOICE, "Granularity of the error log.", choices=LOG_LEVELS),
    SettingSpec("capture_output", Kind.BOOL, "Redirect the application's stdout/stderr to the error log."),
    SettingSpec("reuse_port", Kind.BOOL, "Set SO_REUSEPORT on the listening socket."),
    SettingSpec("control_socket", Kind.ABSOLUTE_PATH, "Unix socket for gunicornc runtime control."),
)


class _InvalidValue(Exception):
    """A problem with one value, worded without its source; callers add where it came from."""


def validate_settings(settings: Mapping[str, object], *, source: str) -> dict[str, object]:
    """Check every name and value against the catalogue and return normalized values.

    ``source`` says where the values came from ("--set", "host_vars", ...) so the error
    can point the user at the line to fix. Cross-field rules only apply when both fields
    are present; callers validate the merged, final settings once more for that reason.
    The result is sorted by name so that the same input always renders the same file.
    """
    normalized: dict[str, object] = {}
    for name, value in settings.items():
        spec = _spec_for(name, source=source)
        try:
            normalized[spec.name] = _normalize(spec, value)
        except _InvalidValue as problem:
            raise DjdeployError(f"{problem} (from {source})", fix=_fix_for(spec)) from None
    try:
        _check_cross_field_rules(normalized)
    except _InvalidValue as problem:
        raise DjdeployError(f"{problem} (from {source})") from None
    return dict(sorted(normalized.items()))


def split_overrides(overrides: Mapping[str, object], *, source: str) -> dict[str, dict[str, object]]:
    """{"catalogued": ..., "host": ...}: the overrides this catalogue checks (and sizing uses),
    validated, and those only the host's gunicorn knows, for its own validators to judge."""
    host = {}
    for name, value in overrides.items():
        if name not in SETTINGS:
            if not isinstance(name, str) or not _SETTING_NAME.fullmatch(name):
                _spec_for(name, source=source)  # raises, naming it
            host[name] = value
    catalogued = validate_settings({n: v for n, v in overrides.items() if n not in host}, source=source)
    return {"catalogued": catalogued, "host": dict(sorted(host.items()))}


def parse_override(text: str, *, source: str) -> tuple[str, object]:
    """Turn one ``KEY=VALUE`` from the command line into a catalogue name and a typed value.

    The catalogue decides the type, so ``workers=4`` yields the integer 4 and
    ``bind=127.0.0.1:8000,unix:/run/app.sock`` yields a list. An empty value resets a
    nullable setting to None. Cross-field rules are left to ``validate_settings`` on the
    merged result, since one override alone cannot break them.
    """
    where = f"{source} {_shown_text(text)}"
    key, has_equals, raw = text.partition("=")
    if not has_equals:
        raise DjdeployError(f"{where}: expected KEY=VALUE", fix="write it as e.g. workers=4")
    name = key.strip()
    if name not in SETTINGS and _SETTING_NAME.fullmatch(name):
        return name, raw  # the host's gunicorn parses it, as from its own command line
    try:
        spec = _lookup(name)
        return spec.name, _normalize(spec, _parse_text(spec, raw))
    except _InvalidValue as problem:
        raise DjdeployError(f"{where}: {problem}", fix=_fix_for(SETTINGS.get(name))) from None


# --- names -------------------------------------------------------------------------------


def _spec_for(name: object, *, source: str) -> SettingSpec:
    try:
        return _lookup(name)
    except _InvalidValue:
        raise DjdeployError(f"{_unknown_head(name)} (from {source}){_did_you_mean(name)}") from None


def _lookup(name: object) -> SettingSpec:
    if isinstance(name, str) and name in SETTINGS:
        return SETTINGS[name]
    raise _InvalidValue(f"{_unknown_head(name)}{_did_you_mean(name)}")


def _unknown_head(name: object) -> str:
    if not isinstance(name, str):
        return f"gunicorn setting names must be text, got {_got(name)}"
    return f"unknown gunicorn setting {_short_repr(name)}"


def _did_you_mean(name: object) -> str:
    if not isinstance(name, str):
        return ""
    # Gunicorn's own CLI spells settings with dashes (--max-requests); meet users there.
    candidate = name.strip().lower().replace("-", "_")
    matches = difflib.get_close_matches(candidate, list(SETTINGS), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


# --- parsing command-line text -----------------------------------------------------------


def _parse_text(spec: SettingSpec, raw: str) -> object:
    """Give command-line text the type the catalogue expects; range checks come later."""
    if spec.nullable and raw.strip() == "":
        return None
    if spec.kind is Kind.INT:
        return _parse_int(spec, raw)
    if spec.kind is Kind.BOOL:
        return _parse_bool(spec, raw)
    if spec.kind is Kind.BIND_LIST:
        return [part.strip() for part in raw.split(",")]
    if spec.kind is Kind.TEXT:
        return raw  # free text: surrounding spaces may be intended
    return raw.strip()


def _parse_int(spec: SettingSpec, raw: str) -> int:
    # int() alone would also take "1_000" and non-ASCII digits; a setting should read plainly.
    if not _INTEGER_TEXT.fullmatch(raw.strip()):
        raise _InvalidValue(f"{spec.name} must be an integer")
    return int(raw.strip())


def _parse_bool(spec: SettingSpec, raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise _InvalidValue(f"{spec.name} must be true or false (also yes/no, 1/0)")


# --- checking and normalizing values -----------------------------------------------------


def _normalize(spec: SettingSpec, value: object) -> object:
    if value is None:
        if spec.nullable:
            return None
        raise _InvalidValue(f"{spec.name} needs a value; it cannot be empty or null")
    return _NORMALIZERS[spec.kind](spec, value)


def _normalize_int(spec: SettingSpec, value: object) -> int:
    # bool is an int subclass in Python, but "workers=True" is a mistake, never a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _InvalidValue(f"{spec.name} must be an integer, got {_got(value)}")
    number = int(value)  # a plain int, even if an int subclass came in
    low, high = spec.minimum, spec.maximum
    if (low is not None and number < low) or (high is not None and number > high):
        raise _InvalidValue(f"{spec.name} must be between {spec.minimum} and {spec.maximum}, got {number}")
    return number


def _normalize_bool(spec: SettingSpec, value: object) -> bool:
    if not isinstance(value, bool):
        raise _InvalidValue(f"{spec.name} must be true or false, got {_got(value)}")
    return value


def _normalize_text(spec: SettingSpec, value: object) -> str:
    """Printable, bounded text: the only kind of string allowed near a config or unit file.

    A newline, carriage return, NUL or any other non-printable character could end a line
    of the generated file early and smuggle in a line of the attacker's choosing.
    """
    if not isinstance(value, str):
        raise _InvalidValue(f"{spec.name} must be text, got {_got(value)}")
    text = str.__str__(value)  # a plain str, even if a subclass (e.g. Ansible's) came in
    if text == "":
        raise _InvalidValue(f"{spec.name} must not be empty")
    bad = next((char for char in text if not char.isprintable()), None)
    if bad is not None:
        raise _InvalidValue(
            f"{spec.name} must not contain control characters such as newlines or NUL, found {bad!r}"
        )
    if len(text) > spec.max_length:
        raise _InvalidValue(f"{spec.name} must be at most {spec.max_length} characters, got {len(text)}")
    return text


def _normalize_absolute_path(spec: SettingSpec, value: object) -> str:
    path = _normalize_text(spec, value)
    if not path.startswith("/"):
        raise _InvalidValue(f"{spec.name} must be an absolute path starting with '/', got {_short_repr(path)}")
    return path


def _normalize_log_target(spec: SettingSpec, value: object) -> str:
    target = _normalize_text(spec, value)
    if target != "-" and not target.startswith("/"):
        raise _InvalidValue(f"{spec.name} must be '-' or an absolute path, got {_short_repr(target)}")
    return target


def _normalize_choice(spec: SettingSpec, value: object) -> str:
    word = _normalize_text(spec, value).lower()  # Gunicorn itself ignores case here
    if word not in spec.choices:
        raise _InvalidValue(f"{spec.name} must be one of {', '.join(spec.choices)}, got {_short_repr(word)}")
    return word


def _normalize_worker_class(spec: SettingSpec, value: object) -> str:
    name = _normalize_text(spec, value)
    if name in spec.choices or _DOTTED_IMPORT_PATH.fullmatch(name):
        return name
    raise _InvalidValue(
        f"{spec.name} must be sync, gthread or a dotted import path such as "
        f"uvicorn.workers.UvicornWorker, got {_short_repr(name)}"
    )


def _normalize_address_list(spec: SettingSpec, value: object) -> str:
    """Accept Gunicorn's comma-separated string or a list; return the string form."""
    if isinstance(value, (list, tuple)):
        value = ",".join(_normalize_text(spec, item) for item in value)
    text = _normalize_text(spec, value)
    entries = [entry.strip() for entry in text.split(",")]
    for entry in entries:
        _check_trusted_address(spec, entry)
    return ",".join(entries)


def _check_trusted_address(spec: SettingSpec, entry: str) -> None:
    if entry == "*":
        return
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise _InvalidValue(
            f"{spec.name} entries must be '*', IP addresses or networks, got {_short_repr(entry)}"
        ) from None


def _normalize_bind_list(spec: SettingSpec, value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _InvalidValue(f"{spec.name} must be a list of addresses, got {_got(value)}")
    if not 1 <= len(value) <= _MAX_BIND_ADDRESSES:
        raise _InvalidValue(f"{spec.name} must list between 1 and {_MAX_BIND_ADDRESSES} addresses, got {len(value)}")
    addresses = [_normalize_bind_address(spec, item) for item in value]
    duplicates = sorted({address for address in addresses if addresses.count(address) > 1})
    if duplicates:
        # Gunicorn would fail at start with "address already in use"; say so now instead.
        raise _InvalidValue(f"{spec.name} lists {duplicates[0]!r} more than once")
    return addresses


def _normalize_bind_address(spec: SettingSpec, value: object) -> str:
    entry = _normalize_text(spec, value)
    if entry.startswith("unix:"):
        return _normalize_unix_bind(spec, entry)
    host, port = _split_host_port(spec, entry)
    return f"{_normalize_bind_host(spec, host, entry)}:{_normalize_port(spec, port, entry)}"


def _normalize_unix_bind(spec: SettingSpec, entry: str) -> str:
    # Gunicorn strips "unix://" before "unix:", so "unix:///run/x" means "/run/x".
    path = entry.removeprefix("unix://") if entry.startswith("unix://") else entry.removeprefix("unix:")
    if not path.startswith("/"):
        raise _InvalidValue(f"{spec.name}: unix socket path must be absolute, got {_short_repr(entry)}")
    if not PLAIN_PATH.fullmatch(path) or "/../" in f"{path}/":
        raise _InvalidValue(
            f"{spec.name}: unix socket path must be plain (letters, digits and . _ / + @ -, no '..'), "
            f"got {_short_repr(entry)}"
        )
    if len(path.encode("utf-8")) > _UNIX_PATH_MAX_BYTES:
        raise _InvalidValue(
            f"{spec.name}: unix socket path must be at most {_UNIX_PATH_MAX_BYTES} bytes, got {_short_repr(entry)}"
        )
    return f"unix:{path}"


def _split_host_port(spec: SettingSpec, entry: str) -> tuple[str, str]:
    if "://" in entry:
        # tcp:// and fd:// also mean something to Gunicorn; one spelling per socket is enough.
        raise _InvalidValue(
            f"{spec.name}: only HOST:PORT, [IPv6]:PORT and unix:/path are supported, got {_short_repr(entry)}"
        )
    if entry.startswith("["):
        inside, closing, rest = entry[1:].partition("]")
        if not closing or not rest.startswith(":"):
            raise _InvalidValue(f"{spec.name}: expected [IPv6]:PORT, got {_short_repr(entry)}")
        return f"[{inside}]", rest[1:]
    host, colon, port = entry.rpartition(":")
    if not colon:
        raise _InvalidValue(f"{spec.name}: expected HOST:PORT or unix:/path, got {_short_repr(entry)}")
    if ":" in host:
        raise _InvalidValue(f"{spec.name}: IPv6 addresses need brackets, e.g. [::1]:8000, got {_short_repr(entry)}")
    return host, port


def _normalize_bind_host(spec: SettingSpec, host: str, entry: str) -> str:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _InvalidValue(f"{spec.name}: {_short_repr(host)} is not an IPv6 address in {entry!r}") from None
        return host
    looks_numeric = all(label.isdigit() for label in host.rstrip(".").split("."))
    if looks_numeric:
        # "999.1.1.1" would pass as a hostname of digits; numbers must form a real IPv4 address.
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise _InvalidValue(f"{spec.name}: {_short_repr(host)} is not an IPv4 address in {entry!r}") from None
    if not _HOSTNAME.fullmatch(host):
        raise _InvalidValue(f"{spec.name}: {_short_repr(host)} is not a valid host name in {entry!r}")
    return host


def _normalize_port(spec: SettingSpec, port: str, entry: str) -> int:
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise _InvalidValue(f"{spec.name}: port must be a number from 1 to 65535 in {entry!r}")
    return int(port)


_NORMALIZERS = {
    Kind.INT: _normalize_int,
    Kind.BOOL: _normalize_bool,
    Kind.TEXT: _normalize_text,
    Kind.ABSOLUTE_PATH: _normalize_absolute_path,
    Kind.WORKER_CLASS: _normalize_worker_class,
    Kind.CHOICE: _normalize_choice,
    Kind.BIND_LIST: _normalize_bind_list,
    Kind.LOG_TARGET: _normalize_log_target,
    Kind.ADDRESS_LIST: _normalize_address_list,
}


# --- rules that involve more than one setting --------------------------------------------


def _check_cross_field_rules(settings: Mapping[str, object]) -> None:
    _check_jitter_within_max_requests(settings)
    _check_threads_need_gthread(settings)


def _check_jitter_within_max_requests(settings: Mapping[str, object]) -> None:
    if "max_requests_jitter" not in settings or "max_requests" not in settings:
        return
    jitter, max_requests = settings["max_requests_jitter"], settings["max_requests"]
    if isinstance(jitter, int) and isinstance(max_requests, int) and jitter > max_requests:
        raise _InvalidValue(f"max_requests_jitter={jitter} must not exceed max_requests={max_requests}")


def _check_threads_need_gthread(settings: Mapping[str, object]) -> None:
    if "threads" not in settings or "worker_class" not in settings:
        return
    threads, worker_class = settings["threads"], settings["worker_class"]
    if isinstance(threads, int) and threads > 1 and worker_class not in GTHREAD_WORKER_CLASSES:
        # Gunicorn would silently ignore threads (or switch sync to gthread behind our back).
        raise _InvalidValue(
            f"threads={threads} needs worker_class gthread, but worker_class is {worker_class!r}; "
            "set worker_class=gthread or threads=1"
        )


# --- messages ----------------------------------------------------------------------------


def _fix_for(spec: SettingSpec | None) -> str | None:
    if spec is None:
        return None
    if spec.kind is Kind.INT:
        takes = f"an integer from {spec.minimum} to {spec.maximum}"
    elif spec.kind is Kind.CHOICE:
        takes = f"one of {', '.join(spec.choices)}"
    else:
        takes = str(spec.kind)
    return f"{spec.name} takes {takes}: {spec.description}"


def _got(value: object) -> str:
    return f"{type_name(value)} {_short_repr(value)}"


def _short_repr(value: object, limit: int = 80) -> str:
    """repr() escapes newlines and control characters, so a hostile value cannot forge output."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _shown_text(text: str, limit: int = 80) -> str:
    if text.isprintable() and len(text) <= limit:
        return text
    return _short_repr(text, limit)
