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


@pytest.fixture
def listeners(fdstore, holder):
    """The holder's listening sockets as the module copies them, closed afterwards."""
    copied = fdstore.copy_listeners(holder[0])
    try:
        yield copied
    finally:
        for sock in copied.values():
            sock.close()


def test_copies_exactly_the_listening_sockets_named_as_gunicorn_binds_them(holder, listeners):
    _pid, tcp, unix, _bound_port = holder
    assert sorted(listeners) == sorted([tcp, unix])


def test_the_copy_is_the_same_socket_connections_wait_in(holder, listeners):
    _pid, tcp, _unix, _bound_port = holder
    port = int(tcp.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"queued")
        listeners[tcp].settimeout(5)
        accepted, _ = listeners[tcp].accept()
        with accepted:
            assert accepted.recv(6) == b"queued"


def test_only_the_binds_sockets_are_stored_not_the_control_socket(fdstore, holder, listeners):
    """gunicorn's control socket (on by default) is a listener of the master too (issue 18: the
    first tune of a hand-written unit declined the hand-over for it and 21 requests got 502)."""
    _pid, tcp, control, _bound_port = holder
    assert control in listeners
    assert fdstore.sockets_for(listeners, [tcp]) == [listeners[tcp]]
    # In the bind's order, the order the next master takes them over in.
    assert fdstore.sockets_for(listeners, [control, tcp]) == [listeners[control], listeners[tcp]]


def test_a_bind_address_the_master_does_not_listen_on_stores_nothing_and_is_named(fdstore, holder, listeners):
    _pid, tcp, _control, bound_port = holder
    elsewhere = f"127.0.0.1:{bound_port}"
    with pytest.raises(fdstore.NotStored, match=rf"the master listens on .*, not on {elsewhere}, which the next"):
        fdstore.sockets_for(listeners, [tcp, elsewhere])


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

