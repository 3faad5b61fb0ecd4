#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: djdeploy contributors
# MIT License (see pyproject.toml)

DOCUMENTATION = r"""
---
module: gunicorn_fdstore
short_description: Hand the running gunicorn master's listening sockets to systemd before a restart
description:
  - A master started from djdeploy's config stores its listening sockets in the unit's file
    descriptor store itself, so that C(systemctl restart) keeps them open for the next master.
    A master started otherwise (the unit a user wrote before the first tune) stores none: its
    restart would close the sockets and refuse connections until the new master binds again.
  - This module takes a copy of that master's listening sockets (C(pidfd_getfd), Linux 5.6,
    root) and stores them in the unit's file descriptor store under the name djdeploy's config
    takes over, as the master itself would have (C(FDSTORE=1) on systemd's notify socket, sent
    with the master's pid as credentials, which C(NotifyAccess=main) accepts from root only).
  - It stores nothing, and says why, when systemd already holds sockets for the unit, the unit
    has no room for them (C(FileDescriptorStoreMax=)), it is socket-activated, or the master does
    not listen on every address of C(bind). Its other listeners (gunicorn's control socket) are
    not stored. It never fails for those reasons: the restart then goes ahead as it would have.
version_added: "0.1.0"
author:
  - djdeploy contributors
options:
  service:
    description: The systemd service whose main process is the gunicorn master.
    type: str
    required: true
  bind:
    description: The addresses the next master serves, as gunicorn's C(bind) setting spells them.
    type: list
    elements: str
    required: true
notes:
  - Standard library only. Inside a container whose seccomp filter denies C(pidfd_getfd) (a
    default C(systemd-nspawn)), it stores nothing and says so.
"""

RETURN = r"""
stored:
  description: The addresses whose sockets were stored (empty when nothing was).
  returned: always
  type: list
why:
  description: What was done, or why nothing was.
  returned: always
  type: str
"""

import array
import ctypes
import errno
import os
import socket
import subprocess

from ansible.module_utils.basic import AnsibleModule

# The name djdeploy's config stores its sockets under and takes over from LISTEN_FDNAMES.
FDNAME = "djdeploy-listeners"
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
NOTIFY_SOCKET = "/run/systemd/notify"


class NotStored(Exception):
    pass


def unit_properties(service):
    done = subprocess.run(
        ["systemctl", "show", "--property=MainPID,NFileDescriptorStore,FileDescriptorStoreMax,TriggeredBy", service],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=dict(os.environ, LC_ALL="C"))
    if done.returncode != 0:
        raise NotStored("systemctl show %s failed: %s" % (service, done.stderr.strip()))
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def listening_address(sock):
    """The address of a listening stream socket as gunicorn's bind spells it; None for any other."""
    try:
        if (sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
                or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
            return None
        name = sock.getsockname()
    except OSError:
        return None
    if sock.family == socket.AF_UNIX:
        return "unix:" + (name.decode() if isinstance(name, bytes) else name)
    if sock.family == socket.AF_INET6:
        return "[%s]:%d" % (name[0], name[1])
    return "%s:%d" % (name[0], name[1])


def copy_listeners(pid):
    """{address: socket} for each listening stream socket of process `pid`, copied from it."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        raise NotStored("pidfd_open(%d): %s" % (pid, os.strerror(ctypes.get_errno())))
    listeners = {}
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue  # closed meanwhile
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                code = ctypes.get_errno()
                if code == errno.EBADF:
                    continue
                raise NotStored("pidfd_getfd of the master's socket %s: %s" % (name, os.strerror(code)))
            sock = socket.socket(fileno=fd)
            address = listening_address(sock)
            if address and address not in listeners:
                listeners[address] = sock
            else:
                sock.close()
    except BaseException:
        for sock in listeners.values():
            sock.close()
        raise
    finally:
        os.close(pidfd)
    return listeners


def sockets_for(listeners, bind):
    """The master's sockets for each address of `bind`, in its order.

    A listener outside the bind stays out of the store: gunicorn's control socket (on by default
    since gunicorn 24, a unix socket in the service user's home or runtime directory), or an
    address the next master no longer serves, which closes with the old master as it would have.
    """
    missing = [address for address in bind if address not in listeners]
    if missing:
        raise NotStored("the master listens on %s, not on %s, which the next one binds"
                        % (",".join(sorted(listeners)) or "nothing", ",".join(missing)))
    return [listeners[address] for address in bind]


def store(main_pid, listeners):
    """FDSTORE=1 on behalf of the main process, which NotifyAccess=main requires."""
    credentials = array.array("i", [main_pid, 0, 0])  # struct ucred: pid, uid, gid
    fds = array.array("i", [sock.fileno() for sock in listeners])
    message = ("FDSTORE=1\nFDNAME=%s" % FDNAME).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sender.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials.tobytes()),
                                   (socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())], 0, NOTIFY_SOCKET)


def hand_over(service, bind):
    unit = unit_properties(service)
    main_pid = int(unit.get("MainPID") or 0)
    if unit.get("TriggeredBy"):
        raise NotStored("the socket unit %s holds the sockets" % unit["TriggeredBy"])
    if not main_pid:
        raise NotStored("no master runs")
    if int(unit.get("NFileDescriptorStore") or 0):
        raise NotStored("systemd holds sockets for %s already" % service)
    if int(unit.get("FileDescriptorStoreMax") or 0) < len(bind):
        raise NotStored("the unit keeps no more than %s file descriptors" % unit.get("FileDescriptorStoreMax"))
    listeners = copy_listeners(main_pid)
    try:
        try:
            store(main_pid, sockets_for(listeners, bind))
        except OSError as exc:
            raise NotStored("systemd's notify socket refused them: %s" % exc)
    finally:
        for sock in listeners.values():
            sock.close()
    held = int(unit_properties(service).get("NFileDescriptorStore") or 0)
    if held < len(bind):
        raise NotStored("systemd kept %d of the %d sockets" % (held, len(bind)))
    return list(bind)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type="str", required=True),
            bind=dict(type="list", elements="str", required=True),
        ),
        supports_check_mode=False,
    )
    try:
        stored = hand_over(module.params["service"], module.params["bind"])
    except NotStored as exc:
        module.exit_json(changed=False, stored=[], why=str(exc))
    module.exit_json(changed=True, stored=stored,
                     why="djdeploy handed systemd the running master's listening sockets (%s)" % ",".join(stored))


if __name__ == "__main__":
    main()
