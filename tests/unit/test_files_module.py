"""The gunicorn_files module, run as Ansible runs it (a Python process reading its arguments),
on a temporary directory: directories and files in order, atomically, idempotent, check and
diff mode, copies of host files, removals, and failures that name the file."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "roles" / "gunicorn" / "library" / "gunicorn_files.py"
# Whoever runs the tests owns what the module writes, so they pass without root as well.
OWNER = {"owner": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name}


def run(tmp_path: Path, *, check: bool = False, diff: bool = False, **args) -> dict:
    arguments = tmp_path.parent / f"{tmp_path.name}-args.json"
    arguments.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check,
                                                             "_ansible_diff": diff}}))
    done = subprocess.run([sys.executable, str(MODULE), str(arguments)], capture_output=True, text=True, timeout=60)
    result = json.loads(done.stdout)
    assert (done.returncode != 0) == bool(result.get("failed")), done
    return result


def file(dest: Path, **spec) -> dict:
    return {"dest": str(dest), **OWNER, **spec}


def mode_of(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.djdeploy"))


def test_directories_then_files_in_order_with_their_modes(tmp_path):
    entry = tmp_path / "history" / "entry"
    result = run(tmp_path, directories=[{"path": str(entry), "mode": "0700", **OWNER}],
                 files=[file(entry / "meta.json", content='{"verdict": "good"}\n', mode="0600"),
                        file(tmp_path / "history" / "LIVE", content="entry\n", mode="0600")])
    assert result["changed"] is True
    assert result["written"] == [str(entry / "meta.json"), str(tmp_path / "history" / "LIVE")]
    # A missing parent is made like the directory asked for.
    assert (mode_of(tmp_path / "history"), mode_of(entry)) == ("0o700", "0o700")
    assert (entry / "meta.json").read_text() == '{"verdict": "good"}\n' and mode_of(entry / "meta.json") == "0o600"
    assert (tmp_path / "history" / "LIVE").read_text() == "entry\n"
    assert leftovers(tmp_path) == []


def test_a_second_run_changes_nothing_and_a_mode_alone_is_a_change(tmp_path):
    spec = {"directories": [{"path": str(tmp_path / "d"), "mode": "0755", **OWNER}],
            "files": [file(tmp_path / "d" / "gunicorn.conf.py", content="workers = 5\n")]}
    assert run(tmp_path, **spec)["changed"] is True
    inode = (tmp_path / "d" / "gunicorn.conf.py").stat().st_ino
    again = run(tmp_path, **spec)
    assert (again["changed"], again["written"]) == (False, [])
    assert (tmp_path / "d" / "gunicorn.conf.py").stat().st_ino == inode  # not even rewritten
    (tmp_path / "d" / "gunicorn.conf.py").chmod(0o600)
    assert run(tmp_path, **spec)["written"] == [str(tmp_path / "d" / "gunicorn.conf.py")]
    assert mode_of(tmp_path / "d" / "gunicorn.conf.py") == "0o644"


def test_a_write_replaces_the_file_by_renaming_a_whole_new_one_over_it(tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("workers = 1\n")
    held = config.open()  # a reader that opened the old file keeps reading the old file
    run(tmp_path, files=[file(config, content="workers = 5\n")])
    assert held.read() == "workers = 1\n"
    held.close()
    assert config.read_text() == "workers = 5\n"
    assert leftovers(tmp_path) == []


def test_check_mode_says_what_would_change_and_changes_nothing(tmp_path):
    (tmp_path / "old").write_text("x")
    result = run(tmp_path, check=True, directories=[{"path": str(tmp_path / "new"), **OWNER}],
                 files=[file(tmp_path / "LIVE", content="a\n"), file(tmp_path / "old", absent=True)])
    assert (result["changed"], result["written"], result["removed"]) == (True, [str(tmp_path / "LIVE")],
                                                                        [str(tmp_path / "old")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_diff_mode_shows_each_changed_file_before_and_after(tmp_path):
    (tmp_path / "unit").write_text("[Service]\nUser=demo\n")
    result = run(tmp_path, diff=True, files=[file(tmp_path / "unit", content="[Service]\nUser=app\n"),
                                             file(tmp_path / "LKG", content="b\n")])
    assert result["diff"] == [
        {"before_header": str(tmp_path / "unit"), "after_header": str(tmp_path / "unit"),
         "before": "[Service]\nUser=demo\n", "after": "[Service]\nUser=app\n"},
        {"before_header": str(tmp_path / "LKG"), "after_header": str(tmp_path / "LKG"), "before": "", "after": "b\n"},
    ]


def test_src_copies_a_file_of_the_host_byte_for_byte(tmp_path):
    (tmp_path / "running.service").write_bytes(b"[Unit]\nDescription=caf\xc3\xa9\n")
    run(tmp_path, files=[file(tmp_path / "unit", src=str(tmp_path / "running.service"), mode="0600")])
    assert (tmp_path / "unit").read_bytes() == b"[Unit]\nDescription=caf\xc3\xa9\n"
    assert mode_of(tmp_path / "unit") == "0o600"


def test_absent_removes_a_file_and_is_no_change_when_it_is_gone(tmp_path):
    (tmp_path / "gunicorn.socket").write_text("[Socket]\n")
    assert run(tmp_path, files=[file(tmp_path / "gunicorn.socket", absent=True)])["removed"] == [
        str(tmp_path / "gunicorn.socket")]
    assert not (tmp_path / "gunicorn.socket").exists()
    assert run(tmp_path, files=[file(tmp_path / "gunicorn.socket", absent=True)])["changed"] is False


def test_remove_if_empty_takes_a_directory_the_removals_left_empty_and_keeps_one_that_holds_anything(tmp_path):
    """Putting back a state that had no config also takes the directory made for it (issue 18:
    a rollback to the baseline left an empty /etc/gunicorn); one that holds another file stays."""
    made, shared = tmp_path / "etc" / "gunicorn", tmp_path / "etc" / "app"
    for directory in (made, shared):
        directory.mkdir(parents=True)
        (directory / "gunicorn.conf.py").write_text("workers = 5\n")
    (shared / "settings.py").write_text("x = 1\n")
    asked = {"files": [file(made / "gunicorn.conf.py", absent=True), file(shared / "gunicorn.conf.py", absent=True)],
             "remove_if_empty": [str(made), str(tmp_path / "etc"), str(shared), str(tmp_path / "missing")]}
    # Check mode counts the files it would remove, and removes nothing.
    assert run(tmp_path, check=True, **asked)["directories_removed"] == [str(made)]
    assert (made / "gunicorn.conf.py").exists()
    result = run(tmp_path, **asked)
    assert (result["changed"], result["directories_removed"]) == (True, [str(made)])
    assert not made.exists() and sorted(p.name for p in shared.iterdir()) == ["settings.py"]
    # /etc holds app: it stays. A second run finds nothing to do.
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["app"]
    assert run(tmp_path, **asked)["changed"] is False


def test_remove_if_empty_leaves_a_link_to_an_empty_directory(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "gunicorn").symlink_to(tmp_path / "real")
    assert run(tmp_path, remove_if_empty=[str(tmp_path / "gunicorn")])["directories_removed"] == []
    assert (tmp_path / "gunicorn").is_symlink() and (tmp_path / "real").is_dir()


@pytest.mark.parametrize(("spec", "says"), [
    ({"content": "x", "absent": True}, "give exactly one of content, src and absent"),
    ({}, "give exactly one of content, src and absent"),
    ({"src": "/nonexistent/unit"}, "the file to copy, /nonexistent/unit, does not exist"),
    ({"content": "x", "mode": "rw-r--r--"}, "mode 'rw-r--r--' is not an octal mode"),
])
def test_a_bad_file_spec_fails_naming_the_file(tmp_path, spec, says):
    result = run(tmp_path, files=[file(tmp_path / "f", **spec)])
    assert result["failed"] and result["msg"].startswith(f"could not write {tmp_path / 'f'}: ") and says in result["msg"]
    assert not (tmp_path / "f").exists()


def test_a_file_that_cannot_be_written_stops_there_naming_it_and_the_error(tmp_path):
    # Its directory is a file: as on a full or read-only disk, the system refuses the write.
    (tmp_path / "history").write_text("not a directory")
    result = run(tmp_path, files=[file(tmp_path / "first", content="1"),
                                  file(tmp_path / "history" / "meta.json", content="{}"),
                                  file(tmp_path / "third", content="3")])
    assert result["failed"]
    assert result["msg"].startswith(f"could not write {tmp_path / 'history' / 'meta.json'}: ")
    assert "Not a directory" in result["msg"]
    # What came before stays written, as a loop of copies would leave it; nothing after it is.
    assert result["written"] == [str(tmp_path / "first")]
    assert (tmp_path / "first").read_text() == "1" and not (tmp_path / "third").exists()
    assert leftovers(tmp_path) == []


def test_a_directory_that_is_a_link_is_judged_by_what_it_points_to(tmp_path):
    (tmp_path / "real").mkdir(mode=0o755)
    (tmp_path / "real").chmod(0o755)
    (tmp_path / "gunicorn").symlink_to(tmp_path / "real")
    spec = {"directories": [{"path": str(tmp_path / "gunicorn"), "mode": "0755", **OWNER}]}
    assert run(tmp_path, **spec)["changed"] is False
    assert (tmp_path / "gunicorn").is_symlink()


def test_attributes_change_owner_and_mode_only_and_say_what_they_were(tmp_path):
    secrets = tmp_path / "env"
    secrets.write_text("DJANGO_SECRET_KEY=s3cret\n")
    secrets.chmod(0o644)
    inode = secrets.stat().st_ino
    result = run(tmp_path, attributes=[{"path": str(secrets), "mode": "0640", **OWNER}])
    assert result["changed"] is True
    assert result["attributes_before"] == [{"path": str(secrets), "mode": "0644", **OWNER}]
    assert mode_of(secrets) == "0o640" and secrets.stat().st_ino == inode
    assert secrets.read_text() == "DJANGO_SECRET_KEY=s3cret\n"
    # What it returned puts the file back as it was, and then nothing is left to change.
    assert run(tmp_path, attributes=result["attributes_before"])["changed"] is True
    assert mode_of(secrets) == "0o644"
    assert run(tmp_path, attributes=result["attributes_before"])["attributes_before"] == []


def test_attributes_of_a_missing_file_fail_naming_it(tmp_path):
    result = run(tmp_path, attributes=[{"path": str(tmp_path / "gone.env"), "mode": "0640", **OWNER}])
    assert result["failed"] and result["msg"].startswith(f"could not write {tmp_path / 'gone.env'}: ")
