#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: djdeploy contributors
# MIT License (see pyproject.toml)

DOCUMENTATION = r"""
---
module: gunicorn_files
short_description: Make directories and write, copy or remove several files in one step
description:
  - Makes the given directories, sets the owner, group and mode of the given existing files,
    then writes, copies or removes the given files, in the order listed, then removes the given
    directories that are empty, in one module run. Each file is written to a temporary file
    beside it and renamed over the old one, so a reader sees the old file or the new one, never
    half of either.
  - Writing the history entry, the pointers C(LIVE) and C(LKG), the staged files and the live
    config and unit this way takes one round trip to the host where C(ansible.builtin.copy)
    takes several per file.
  - A file whose content, mode, owner and group are already as asked is left alone.
  - Stops at the first file it cannot write; the files before it stay written, as a loop of
    copies would leave them. The message names the file and the system's error.
version_added: "0.1.0"
author:
  - djdeploy contributors
options:
  directories:
    description:
      - Directories to make before any file, in order. Missing parents are made with the same
        owner and mode; an existing directory gets the owner and mode asked for.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The directory.
        type: path
        required: true
      mode:
        description: Its mode, as an octal string.
        type: str
        default: "0755"
      owner:
        description: Its owner.
        type: str
        default: root
      group:
        description: Its group.
        type: str
        default: root
  attributes:
    description:
      - Existing files whose owner, group and mode to set, without reading or writing their
        content (environment files that hold secrets). What each had before is returned, to put
        it back with the same option.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file.
        type: path
        required: true
      mode:
        description: Its mode, as an octal string.
        type: str
        required: true
      owner:
        description: Its owner.
        type: str
        required: true
      group:
        description: Its group.
        type: str
        required: true
  files:
    description:
      - Files to write, copy or remove, in order. Exactly one of I(content), I(src) and
        I(absent) says what becomes of each.
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: The file.
        type: path
        required: true
      content:
        description: The text to write.
        type: str
      src:
        description: A file on the host whose bytes to write.
        type: path
      absent:
        description: Remove the file if it exists.
        type: bool
        default: false
      mode:
        description: Its mode, as an octal string.
        type: str
        default: "0644"
      owner:
        description: Its owner.
        type: str
        default: root
      group:
        description: Its group.
        type: str
        default: root
  remove_if_empty:
    description:
      - Directories to remove after the files, in order (the deepest first), each only if it is
        empty then. One that holds anything, or is missing, is left as it is.
    type: list
    elements: path
    default: []
notes:
  - Supports check mode (it reports what it would change) and diff mode (text files).
"""

EXAMPLES = r"""
- name: Write a history entry and point LIVE at it
  gunicorn_files:
    directories:
      - path: /var/lib/djdeploy/history/20261203T101500Z-a1b2c3
        mode: "0700"
    files:
      - dest: /var/lib/djdeploy/history/20261203T101500Z-a1b2c3/meta.json
        content: "{{ entry | to_nice_json }}"
        mode: "0600"
      - dest: /var/lib/djdeploy/history/LIVE
        content: "20261203T101500Z-a1b2c3\n"
        mode: "0600"
"""

RETURN = r"""
written:
  description: The files written (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
removed:
  description: The files removed (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
directories_removed:
  description: The directories of I(remove_if_empty) removed (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
attributes_before:
  description: For each file of I(attributes) whose owner, group or mode changed, what they were.
  returned: always
  type: list
  elements: dict
  sample: [{path: /etc/app/env, owner: app, group: app, mode: "0644"}]
"""

import grp
import os
import pwd
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule


class FileProblem(Exception):
    """A file or directory that cannot be made as asked; the message names it."""


def ids(owner, group):
    try:
        return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise FileProblem("no such user or group: %s" % exc)


def parse_mode(text, path):
    try:
        mode = int(str(text), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise FileProblem("%s: mode %r is not an octal mode like 0644" % (path, text))
    return mode


def attributes_differ(path, mode, uid, gid, follow=False):
    """A file is judged itself (a link is replaced, as a rename replaces it); a directory that
    is a link, by what it points to."""
    now = os.stat(path) if follow else os.lstat(path)
    return stat.S_IMODE(now.st_mode) != mode or now.st_uid != uid or now.st_gid != gid


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def make_directory(spec, check_mode):
    """Make the directory (and missing parents alike); True if anything changed."""
    path = spec["path"].rstrip("/") or "/"
    mode = parse_mode(spec["mode"], path)
    uid, gid = ids(spec["owner"], spec["group"])
    missing = []
    walk = path
    while not os.path.isdir(walk):
        if os.path.lexists(walk):
            raise FileProblem("%s exists and is not a directory" % walk)
        missing.append(walk)
        walk = os.path.dirname(walk)
    if not missing and not attributes_differ(path, mode, uid, gid, follow=True):
        return False
    if check_mode:
        return True
    for directory in reversed(missing):
        os.mkdir(directory, mode)
    for directory in [*reversed(missing), *([] if missing else [path])]:
        os.chown(directory, uid, gid)
        os.chmod(directory, mode)
    return True


def write_atomically(module, dest, data, mode, uid, gid):
    directory, name = os.path.split(dest)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".%s." % name, suffix=".djdeploy")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chown(temporary, uid, gid)
        os.chmod(temporary, mode)
        if module.selinux_enabled():
            module.set_context_if_different(temporary, module.selinux_default_context(dest), False)
        os.replace(temporary, dest)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def as_text(data):
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "(binary)"


def name_or_number(lookup, number, field):
    """A user's or group's name, or its number when the system knows no name for it."""
    try:
        return getattr(lookup(number), field)
    except KeyError:
        return str(number)


def set_attributes(spec, check_mode):
    """Give an existing file the owner, group and mode asked for; what it had before, or None
    when it had them already."""
    path = spec["path"]
    mode = parse_mode(spec["mode"], path)
    uid, gid = ids(spec["owner"], spec["group"])
    if not attributes_differ(path, mode, uid, gid, follow=True):
        return None
    now = os.stat(path)
    owner = name_or_number(pwd.getpwuid, now.st_uid, "pw_name")
    group = name_or_number(grp.getgrgid, now.st_gid, "gr_name")
    if not check_mode:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return {"path": path, "owner": owner, "group": group, "mode": "%04o" % stat.S_IMODE(now.st_mode)}


def put_file(module, spec, diffs):
    """Write, copy or remove one file; 'written', 'removed' or None when nothing changed."""
    dest = spec["dest"]
    chosen = [key for key in ("content", "src") if spec[key] is not None] + (["absent"] if spec["absent"] else [])
    if len(chosen) != 1:
        raise FileProblem("%s: give exactly one of content, src and absent" % dest)
    if os.path.isdir(dest):
        raise FileProblem("%s is a directory" % dest)
    before = read_bytes(dest)
    if spec["absent"]:
        if not os.path.lexists(dest):
            return None
        if module._diff:
            diffs.append({"before_header": dest, "after_header": dest, "before": as_text(before), "after": ""})
        if not module.check_mode:
            os.unlink(dest)
        return "removed"
    if spec["src"] is not None:
        data = read_bytes(spec["src"])
        if data is None:
            raise FileProblem("%s: the file to copy, %s, does not exist" % (dest, spec["src"]))
    else:
        data = spec["content"].encode("utf-8")
    mode = parse_mode(spec["mode"], dest)
    uid, gid = ids(spec["owner"], spec["group"])
    if before == data and not attributes_differ(dest, mode, uid, gid):
        return None
    if module._diff and before != data:
        diffs.append({"before_header": dest, "after_header": dest, "before": as_text(before), "after": as_text(data)})
    if not module.check_mode:
        write_atomically(module, dest, data, mode, uid, gid)
    return "written"


def remove_if_empty(path, gone, check_mode):
    """Remove the directory if nothing is left in it, counting what this run removed (check mode
    removes nothing); True if it went."""
    try:
        left = [name for name in os.listdir(path) if os.path.join(path, name) not in gone]
    except (FileNotFoundError, NotADirectoryError):
        return False
    if left or os.path.islink(path):
        return False
    if not check_mode:
        os.rmdir(path)
    return True


def owned(mode):
    """The owner, group and mode options of a directory or file, root's by default."""
    return dict(mode=dict(type="str", default=mode), owner=dict(type="str", default="root"),
                group=dict(type="str", default="root"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="path", required=True), **owned("0755"))),
            attributes=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="path", required=True), mode=dict(type="str", required=True),
                owner=dict(type="str", required=True), group=dict(type="str", required=True))),
            files=dict(type="list", elements="dict", default=[], options=dict(
                dest=dict(type="path", required=True), content=dict(type="str"), src=dict(type="path"),
                absent=dict(type="bool", default=False), **owned("0644"))),
            remove_if_empty=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    changed, written, removed, diffs, attributes_before, directories_removed = False, [], [], [], [], []
    current, doing = None, "write"
    try:
        for spec in module.params["directories"]:
            current = spec["path"]
            changed = make_directory(spec, module.check_mode) or changed
        for spec in module.params["attributes"]:
            current = spec["path"]
            before = set_attributes(spec, module.check_mode)
            if before:
                changed = True
                attributes_before.append(before)
        for spec in module.params["files"]:
            current = spec["dest"]
            done = put_file(module, spec, diffs)
            if done:
                changed = True
                (written if done == "written" else removed).append(current)
        for path in module.params["remove_if_empty"]:
            current, doing = path.rstrip("/") or "/", "remove"
            if remove_if_empty(current, set(removed + directories_removed), module.check_mode):
                changed = True
                directories_removed.append(current)
    except (OSError, FileProblem) as exc:
        module.fail_json(msg="could not %s %s: %s" % (doing, current, exc), written=written, removed=removed,
                         directories_removed=directories_removed, attributes_before=attributes_before)
    result = dict(changed=changed, written=written, removed=removed, directories_removed=directories_removed,
                  attributes_before=attributes_before)
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
