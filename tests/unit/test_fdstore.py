"""The gunicorn_fdstore module's copy of another process's listening sockets, on real sockets of
a real child process (pidfd_getfd works for root outside a container's seccomp filter). The
store itself and the restart it serves are proven on lab hosts (test_reloads.py)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "roles" / "gunicorn" / "library"

HOLDER = """
import socket, sys, time
tcp = socket.socket(); tcp.bind(("127.0.0.1", 0)); tcp.listen()
unix = socket.socket(socket.AF_UNIX); unix.bind(sys.argv[1]); unix.listen()
bound_only = socket.socket(); bound_only.bind(("127.0.0.1", 0))
udp = socket.socket(type=socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
pair = socket.socketpair()
print(tcp.getsockname()[1], bound_only.getsockname()[1], flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def fdstore() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gunicorn_fdstore", LIBRARY / "gunicorn_fdstore.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def holder(tmp_path):
    path = str(tmp_path / "app.sock")
    child = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True)
    try:
        tcp_port, bound_port = (int(word) for word in child.stdout.readline().split())
        yield child.pid, f"127.0.0.1:{tcp_port}", f"unix:{path}", bound_port
    finally:
        child.kill()
        child.wait()


def test_copies_exactly_the_listening_sockets_named_as_gunicorn_binds_them(fdstore, holder):
    pid, tcp, unix, _bound_port = holder
    listeners = fdstore.copy_listeners(pid)
    try:
        assert sorted(listeners) == sorted([tcp, unix])
    finally:
        for sock in listeners.values():
            sock.close()


def test_the_copy_is_the_same_socket_connections_wait_in(fdstore, holder):
    pid, tcp, _unix, _bound_port = holder
    listeners = fdstore.copy_listeners(pid)
    try:
        port = int(tcp.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"queued")
            listeners[tcp].settimeout(5)
            accepted, _ = listeners[tcp].accept()
            with accepted:
                assert accepted.recv(6) == b"queued"
    finally:
        for sock in listeners.values():
            sock.close()


def test_a_process_that_is_gone_is_named(fdstore):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(fdstore.NotStored, match=rf"pidfd_open\({child.pid}\)"):
        fdstore.copy_listeners(child.pid)


@pytest.mark.parametrize(
    ("family", "kind", "address", "listen", "expected"),
    [
        (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0), True, "127.0.0.1:{port}"),
        (socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0), True, "[::1]:{port}"),
        (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0), False, None),
        (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0), False, None),
    ],
)
def test_listening_address(fdstore, family, kind, address, listen, expected):
    try:
        sock = socket.socket(family, kind)
    except OSError:
        pytest.fail(f"this machine cannot open a {family.name} socket")
    with sock:
        sock.bind(address)
        if listen:
            sock.listen()
        port = sock.getsockname()[1]
        assert fdstore.listening_address(sock) == (expected.format(port=port) if expected else None)
