"""Steady HTTP load that records every request, so the seconds around a reload can be cut out
and judged afterwards.

wrk only reports aggregates for the whole run; judging a reload needs each request's start
time, latency and outcome. A few Python threads, each holding one keep-alive connection to
nginx and pacing itself to a fixed rate, are enough for the moderate load a 2-core machine
shared by nginx, gunicorn and the generator allows, and keep the offered load the same
whether the server is fast or stalled (a stalled request shows as one long latency, and that
connection's next request is sent as soon as it returns).

`summarize` and `nginx_failures` are pure, for the benchmark, the tests and their unit tests.
"""

from __future__ import annotations

import http.client
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Load", "Sample", "nginx_failures", "percentile", "summarize"]

# Never run unbounded: a load stops by itself after this long even if nobody stops it. One hour:
# bench.reloads keeps one load through its tuned phase (20 tune/rollback cycles and more),
# which took over 30 min.
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class Sample:
    start: float  # time.time() when the request was sent
    latency: float  # seconds until the whole response was read, or until the error
    status: int | None  # None: no HTTP response (refused, reset, timed out)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status is None or not 200 <= self.status < 300


class Load:
    """`connections` threads, each sending GET `url` `rate` times a second on its own
    keep-alive connection, until `stop()` or `max_seconds`; `host_header` is the Host they send
    (an app that checks it, as Django's ALLOWED_HOSTS does, needs its own name)."""

    def __init__(self, url: str, *, connections: int = 4, rate: float = 10.0, timeout: float = 30.0,
                 max_seconds: float = MAX_SECONDS, host_header: str = "localhost"):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"load needs an http:// URL, got {url!r}")
        if connections < 1 or rate <= 0 or not 0 < max_seconds <= MAX_SECONDS:
            raise ValueError("load needs connections >= 1, rate > 0 and 0 < max_seconds <= MAX_SECONDS")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self.interval, self.timeout, self.max_seconds = 1.0 / rate, timeout, max_seconds
        self.host_header = host_header
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._threads = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
                         for i in range(connections)]

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[Sample]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self.samples()

    def samples(self) -> list[Sample]:
        with self._lock:
            return sorted(self._samples, key=lambda s: s.start)

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self._stopping.is_set() and time.monotonic() < self._deadline:
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            sample, keep = self._one(connection)
            with self._lock:
                self._samples.append(sample)
            if not keep:
                connection.close()
                connection = None
            next_at = max(next_at + self.interval, time.monotonic())
            self._stopping.wait(next_at - time.monotonic())
        if connection is not None:
            connection.close()

    def _one(self, connection: http.client.HTTPConnection) -> tuple[Sample, bool]:
        started, clock = time.time(), time.perf_counter()
        try:
            connection.request("GET", self.path, headers={"Host": self.host_header})
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Sample(started, time.perf_counter() - clock, None, f"{type(exc).__name__}: {exc}"), False
        keep = not response.will_close
        return Sample(started, time.perf_counter() - clock, response.status), keep


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (the smallest value with at least `fraction` of them at or
    below it): always one of the values, so a p99 is a latency somebody really waited."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(samples: Iterable[Sample], since: float | None = None, until: float | None = None) -> dict:
    """Count, failures and latencies (seconds) of the requests sent within [since, until)."""
    chosen = [s for s in samples
              if (since is None or s.start >= since) and (until is None or s.start < until)]
    latencies = [s.latency for s in chosen]
    failures = [s for s in chosen if s.failed]
    summary: dict = {"requests": len(chosen), "failed": len(failures)}
    if latencies:
        summary.update(p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99), max=max(latencies))
    else:
        summary.update(p50=None, p99=None, max=None)
    summary["errors"] = sorted({s.error or f"HTTP {s.status}" for s in failures})
    return summary


# The status nginx answered and the status(es) it got from upstream, from the lab's log format.
_NGINX_LINE = re.compile(r'" (?P<status>\d{3}) \d+ rt=\S+ ut=.*? us=(?P<upstream>.*)$')


def nginx_failures(lines: Iterable[str]) -> dict[str, int]:
    """nginx access-log lines (the lab's format) → {status: count} of requests that nginx
    answered with a 5xx or that an upstream attempt failed for (502/504 from upstream, or an
    attempt nginx retried after an error: 'us=502, 200')."""
    counts: dict[str, int] = {}
    for line in lines:
        match = _NGINX_LINE.search(line)
        if not match:
            continue
        status, upstream = match["status"], match["upstream"]
        bad_attempts = [code for code in re.split(r"[,:]\s*", upstream) if code in ("502", "504")]
        if status.startswith("5"):
            counts[status] = counts.get(status, 0) + 1
        elif bad_attempts:
            key = f"retried after {bad_attempts[0]}"
            counts[key] = counts.get(key, 0) + 1
    return counts
