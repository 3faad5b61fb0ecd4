#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: djdeploy contributors
# MIT License (see pyproject.toml)

DOCUMENTATION = r"""
---
module: gunicorn_history
short_description: Read djdeploy's history of gunicorn configs on a host
description:
  - Reads every entry of the history directory djdeploy keeps on the host (one directory per
    change, each with the unit, the gunicorn config and a C(meta.json)), and the C(LIVE) and
    C(LKG) pointers naming the entry that runs and the last-known-good one.
  - Only reads; it never changes anything, so it behaves the same in check mode.
  - An entry whose C(meta.json) is missing or unreadable (an interrupted run) is still listed,
    with the verdict C(unreadable) and the reason, so it is never silently ignored.
version_added: "0.1.0"
author:
  - djdeploy contributors
options:
  path:
    description:
      - The history directory.
    type: path
    required: true
notes:
  - Needs root: the history is readable by root only.
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Read the history of changes on this host
  gunicorn_history:
    path: /var/lib/djdeploy/history
  register: __gunicorn_history
"""

RETURN = r"""
history:
  description: The host's history.
  returned: success
  type: dict
  contains:
    exists:
      description: Whether the history directory exists.
      type: bool
    entries:
      description: The C(meta.json) of each entry (id, time, who, command, kind, previous,
        settings, verdict, ...), in directory-name order.
      type: list
      elements: dict
    live:
      description: The id in C(LIVE), the entry whose config runs now; null if none.
      type: str
    lkg:
      description: The id in C(LKG), the last-known-good entry; null if none.
      type: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

POINTERS = ("LIVE", "LKG")


def read_pointer(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None


def read_entry(directory, name):
    meta_path = os.path.join(directory, name, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as handle:
            entry = json.load(handle)
        if not isinstance(entry, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return {"id": name, "verdict": "unreadable", "failure": "%s: %s" % (meta_path, exc)}
    entry["id"] = name  # the directory name is what pointers and --to refer to
    return entry


def read_history(directory):
    if not os.path.isdir(directory):
        return {"exists": False, "entries": [], "live": None, "lkg": None}
    names = sorted(
        name for name in os.listdir(directory)
        if name not in POINTERS and os.path.isdir(os.path.join(directory, name))
    )
    return {
        "exists": True,
        "entries": [read_entry(directory, name) for name in names],
        "live": read_pointer(os.path.join(directory, "LIVE")),
        "lkg": read_pointer(os.path.join(directory, "LKG")),
    }


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True)), supports_check_mode=True)
    try:
        history = read_history(module.params["path"])
    except OSError as exc:
        module.fail_json(msg="cannot read the history in %s: %s" % (module.params["path"], exc))
    module.exit_json(changed=False, history=history)


if __name__ == "__main__":
    main()
