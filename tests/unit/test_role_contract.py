"""The gunicorn role's contract: its inputs are declared once and documented, its internal names
keep to the role's naming rules, and ansible-lint's production profile and Ansible's own syntax
check pass on the role and the playbooks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "gunicorn"
# The venv's bin (not resolved: the venv's python is a symlink to the system one).
VENV_BIN = Path(sys.executable).parent

SET_FACT = {"set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact"}
# Keys of a task that hold further tasks.
TASK_LISTS = ("block", "rescue", "always")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def defaults() -> dict[str, Any]:
    return load(ROLE / "defaults" / "main.yml")


def options() -> dict[str, dict[str, Any]]:
    return load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]


# --- (a) argument_specs and defaults declare the same inputs with the same defaults ----------


def test_argument_specs_and_defaults_have_the_same_inputs() -> None:
    in_specs, in_defaults = set(options()), set(defaults())
    assert in_specs - in_defaults == set(), "in meta/argument_specs.yml but not in defaults/main.yml"
    assert in_defaults - in_specs == set(), "in defaults/main.yml but not in meta/argument_specs.yml"


def test_every_input_is_named_for_the_role() -> None:
    assert [name for name in defaults() if not name.startswith("gunicorn_")] == []


@pytest.mark.parametrize("name", sorted(options()))
def test_default_equals_the_argument_spec_default(name: str) -> None:
    spec, value = options()[name], defaults().get(name)
    # No default in the spec is null in defaults/main.yml, and the other way round.
    default = spec.get("default")
    assert value == default, f"{name}: defaults/main.yml has {value!r}, argument_specs {default!r}"
    assert type(value) is type(default), f"{name}: {type(value).__name__} vs {type(default).__name__}"


PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "int": (int,),
    "float": (float,),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
    "raw": (str, int, float, bool, list, dict),
}


@pytest.mark.parametrize("name", sorted(options()))
def test_default_has_the_declared_type(name: str) -> None:
    spec, value = options()[name], defaults().get(name)
    assert spec["type"] in PYTHON_TYPES, f"{name}: type {spec['type']!r} is not one this test knows"
    assert spec.get("description"), f"{name} has no description"
    if value is None:
        assert not spec.get("required"), f"{name} is required but defaults to null"
        return
    assert isinstance(value, PYTHON_TYPES[spec["type"]]) and not (
        spec["type"] in ("int", "float") and isinstance(value, bool)
    ), f"{name}: {value!r} is not a {spec['type']}"
    if spec["type"] == "list" and "elements" in spec:
        element_types = PYTHON_TYPES[spec["elements"]]
        wrong = [item for item in value if not isinstance(item, element_types)]
        assert wrong == [], f"{name}: not {spec['elements']}"
    if "choices" in spec:
        assert value in spec["choices"], f"{name}: {value!r} is not one of {spec['choices']}"


# --- (b) every default is documented by the comment right above it ---------------------------

TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):")


def test_every_default_has_a_comment_line_right_above_it() -> None:
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    found: list[str] = []
    uncommented: list[str] = []
    for number, line in enumerate(lines):
        match = TOP_LEVEL_KEY.match(line)
        if not match:
            continue
        found.append(match.group(1))
        if number == 0 or not lines[number - 1].startswith("#"):
            uncommented.append(match.group(1))
    # Every key the YAML holds was seen as a line here (no flow mappings or odd spellings).
    assert found == list(defaults())
    assert uncommented == []


# --- (c) internal names: _gunicorn_ for facts and vars, __gunicorn_ for registered results ----


def tasks_in(items: list[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    for task in items or []:
        yield task
        for key in TASK_LISTS:
            yield from tasks_in(task.get(key))


def task_files() -> list[Path]:
    return sorted((ROLE / "tasks").glob("*.yml"))


def names_in_tasks() -> dict[str, list[tuple[str, str, str]]]:
    """(file, task, name) by kind: set_fact, vars, register, loop_var."""
    found: dict[str, list[tuple[str, str, str]]] = {"set_fact": [], "vars": [], "register": [], "loop_var": []}
    for path in task_files():
        for task in tasks_in(load(path)):
            where = (path.name, task.get("name", "?"))
            for module in SET_FACT & set(task):
                arguments = task[module]
                assert isinstance(arguments, dict), f"{where}: write set_fact arguments as a mapping"
                found["set_fact"] += [(*where, name) for name in arguments if name != "cacheable"]
            found["vars"] += [(*where, name) for name in task.get("vars") or {}]
            if "register" in task:
                found["register"].append((*where, task["register"]))
            if "loop_var" in (task.get("loop_control") or {}):
                found["loop_var"].append((*where, task["loop_control"]["loop_var"]))
    return found


def test_the_walk_sees_nested_blocks_and_rescues() -> None:
    found = names_in_tasks()
    # Registered inside rollback.yml's block, and set in its rescue.
    assert ("rollback.yml", "Read the last-known-good entry", "__gunicorn_lkg_meta") in found["register"]
    assert ("rollback.yml", "Note that the host needs a person", "_gunicorn_outcome") in found["set_fact"]
    # Task vars of an include inside change.yml's apply block.
    verify_include = ("change.yml", "Verify that the new workers serve with the new settings", "_gunicorn_verify_kind")
    assert verify_include in found["vars"]


@pytest.mark.parametrize("kind", ["set_fact", "vars", "loop_var"])
def test_facts_and_task_vars_start_with_one_underscore_and_the_role(kind: str) -> None:
    wrong = [found for found in names_in_tasks()[kind] if not found[2].startswith("_gunicorn_")]
    assert wrong == []


def test_registered_results_start_with_two_underscores_and_the_role() -> None:
    found = names_in_tasks()["register"]
    assert found, "no task registers anything: the walk is broken"
    assert [entry for entry in found if not entry[2].startswith("__gunicorn_")] == []


def test_role_vars_start_with_one_underscore_and_the_role() -> None:
    names = list(load(ROLE / "vars" / "main.yml"))
    assert names, "vars/main.yml is empty"
    assert [name for name in names if not name.startswith("_gunicorn_")] == []


# --- (d) ansible-lint and Ansible's syntax check ---------------------------------------------


def tool(name: str) -> str:
    found = shutil.which(name, path=str(VENV_BIN))
    if found is None:
        pytest.fail(f"{name} is not in {VENV_BIN}: install the dev extras (.ci/install)")
    return found


def tool_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1",
           "ANSIBLE_NOCOLOR": "1", **extra}
    env.pop("ANSIBLE_CONFIG", None)  # the repo's own files decide, not the caller's config
    return env


def test_ansible_lint_production_profile_passes() -> None:
    done = subprocess.run(
        [tool("ansible-lint"), "--nocolor", "--profile", "production", "roles/gunicorn", "playbooks/"],
        cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=600,
    )
    output = f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in done.stderr + done.stdout, output


def test_tune_playbook_passes_the_syntax_check() -> None:
    done = subprocess.run(
        [tool("ansible-playbook"), "--syntax-check", "playbooks/tune.yml"],
        cwd=REPO, env=tool_env(ANSIBLE_ROLES_PATH="roles"), capture_output=True, text=True, timeout=300,
    )
    output = f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, output
    assert "playbook: playbooks/tune.yml" in done.stdout, output
