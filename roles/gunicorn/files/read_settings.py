"""Read every setting a gunicorn command line sets, by gunicorn's own rules, as gunicorn
itself would when it starts: its argument parser for the flags (long and short forms), the
config file named by --config/-c (or GUNICORN_CMD_ARGS, or gunicorn.conf.py in the working
directory), then GUNICORN_CMD_ARGS, then the flags, each value through the setting's own
validator. Run with the service's Python, as the service user, in its working directory and
environment, so the config file sees what it sees under gunicorn.

Prints one JSON document: where each setting the user set came from and its value, the
version's settings registry (name, flags, validator, default), and the verdict of gunicorn's
validators on settings djdeploy is asked to set (`overrides`).

Usage: python read_settings.py '{"argv": [...ExecStart...], "overrides": {"name": value}}'
"""

import importlib
import importlib.machinery
import importlib.util
import json
import math
import os
import sys


def plain(value, depth=0):
    """`value` as JSON carries it, or raise ValueError: what can be written back as a literal."""
    if depth > 50:
        raise ValueError("nested too deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a finite number")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item, depth + 1) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: plain(item, depth + 1) for key, item in value.items()}
    raise ValueError("a %s" % type(value).__name__)


def gunicorn_arguments(argv):
    """The arguments after the gunicorn program: `gunicorn ARGS`, `python -m gunicorn ARGS`."""
    if len(argv) > 2 and os.path.basename(argv[0]).startswith("python") and argv[1:3] == ["-m", "gunicorn"]:
        return argv[3:]
    return argv[1:]


def load_config_file(location):
    """The names a config file defines, run the way gunicorn runs it."""
    if location.startswith("python:"):
        return vars(importlib.import_module(location[len("python:"):]))
    filename = location[len("file:"):] if location.startswith("file:") else location
    spec = importlib.util.spec_from_file_location("__config__", filename)
    if spec is None:  # gunicorn warns and loads any other extension as Python source
        loader = importlib.machinery.SourceFileLoader("__config__", filename)
        spec = importlib.util.spec_from_file_location("__config__", filename, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["__config__"] = module
    spec.loader.exec_module(module)
    return vars(module)


# What djdeploy's own config records about itself (djdeploy.adoption.config_records).
RECORDS = ("djdeploy_kept_settings", "djdeploy_overridden")
CONFIG_MARKER = "# gunicorn config written by djdeploy."


def written_by_djdeploy(location):
    if location.startswith("python:"):
        return False
    with open(location[len("file:"):] if location.startswith("file:") else location, encoding="utf-8",
              errors="replace") as handle:
        return handle.readline().startswith(CONFIG_MARKER)


def describe(value):
    """(JSON value, hook) of a setting's value: a function is a hook, not a value."""
    if callable(value) and not isinstance(value, type):
        return None, True
    try:
        return plain(value), False
    except ValueError:
        return None, False


def read(argv, overrides):
    from gunicorn import __version__
    from gunicorn.config import Config, get_default_config_file

    cfg = Config()
    parser = cfg.parser()
    # argparse reports a bad command line by exiting: turn that into an error we can print.
    parser.exit = lambda status=0, message=None: (_ for _ in ()).throw(ValueError((message or "").strip()))
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))
    args = parser.parse_args(gunicorn_arguments(argv))
    env_args = parser.parse_args(cfg.get_cmd_args_from_env())

    found = {}  # name -> (source, raw value)
    location = args.config or env_args.config or get_default_config_file()
    djdeploy = {"written_by_djdeploy": False}
    if location:
        config_source = "config file %s" % os.path.abspath(location)
        names = load_config_file(location)
        for name, value in names.items():
            if name in cfg.settings:
                found[name] = (config_source, value)
        djdeploy = {"written_by_djdeploy": written_by_djdeploy(location)}
        for name in RECORDS:
            try:
                if name in names:
                    djdeploy[name] = plain(names[name])
            except ValueError:
                pass  # not djdeploy's record: a user's own variable of that name
    for source, namespace in (("GUNICORN_CMD_ARGS", env_args), ("command line", args)):
        for name, value in vars(namespace).items():
            if value is not None and name not in ("args", "config"):
                found[name] = (source, value)

    settings = {}
    for name, (source, raw) in sorted(found.items()):
        entry = {"source": source}
        try:
            cfg.set(name, raw)
        except Exception as exc:  # gunicorn itself would refuse to start
            entry["error"] = "%s: %s" % (type(exc).__name__, exc)
        value, hook = describe(raw)
        entry.update(value=value, hook=hook, plain=not hook and (value is not None or raw is None))
        settings[name] = entry

    registry = {}
    for name, setting in sorted(cfg.settings.items()):
        default, _ = describe(setting.default)
        registry[name] = {
            "flags": list(setting.cli or []),
            "validator": getattr(setting.validator, "__name__", None),
            "section": setting.section,
            "default": default,
        }

    checked = {}
    for name, value in overrides.items():
        if name not in cfg.settings:
            checked[name] = {"error": "not a gunicorn %s setting" % __version__}
            continue
        try:
            probe = Config()
            probe.set(name, value)
            checked[name] = {"value": plain(probe.settings[name].get())}
        except Exception as exc:
            checked[name] = {"error": "%s: %s" % (type(exc).__name__, exc)}

    return {
        "gunicorn_version": __version__,
        "config_file": os.path.abspath(location) if location and not location.startswith("python:") else location,
        "app": args.args[-1] if args.args else None,
        "settings": settings,
        "registry": registry,
        "overrides": checked,
        "djdeploy": djdeploy,
    }


def main():
    request = json.loads(sys.argv[1])
    sys.path.insert(0, os.getcwd())  # gunicorn puts its working directory first on the path
    try:
        result = read(request["argv"], request.get("overrides") or {})
    except SystemExit as exc:
        result = {"error": "the config file exited (%s)" % exc.code}
    except Exception as exc:
        result = {"error": "%s: %s" % (type(exc).__name__, exc)}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
