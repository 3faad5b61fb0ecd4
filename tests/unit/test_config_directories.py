"""The directory djdeploy makes for its config goes again when a state without a config is put
back (issue 18: a rollback to the baseline left an empty /etc/gunicorn): the facts say which
directories are missing before the first change, the baseline keeps that, and
history.config_directories_to_remove says which of them a restore may remove (if empty)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import library_module
from djdeploy.history import config_directories_to_remove

facts = library_module("gunicorn_facts")


def test_the_facts_name_the_missing_directories_above_the_config_deepest_first(tmp_path):
    config = tmp_path / "etc" / "myapp" / "gunicorn" / "gunicorn.conf.py"
    assert facts.missing_directories(str(config)) == [str(config.parent), str(tmp_path / "etc" / "myapp"),
                                                      str(tmp_path / "etc")]
    (tmp_path / "etc" / "myapp").mkdir(parents=True)
    assert facts.missing_directories(str(config)) == [str(config.parent)]
    config.parent.mkdir()
    assert facts.missing_directories(str(config)) == []
    # A file where a directory would be is there: not missing, never removed.
    (tmp_path / "plain").write_text("")
    assert facts.missing_directories(str(tmp_path / "plain" / "gunicorn.conf.py")) == []


BASELINE = {"kind": "baseline", "config_present": False, "config_directories_missing": ["/etc/gunicorn"]}


@pytest.mark.parametrize(
    ("entry", "config_path", "expected"),
    [
        (BASELINE, "/etc/gunicorn/gunicorn.conf.py", ["/etc/gunicorn"]),
        # A rollback to the baseline describes the same state.
        ({**BASELINE, "kind": "rollback"}, "/etc/gunicorn/gunicorn.conf.py", ["/etc/gunicorn"]),
        # Several levels made, the deepest first, whatever order they were kept in.
        ({**BASELINE, "config_directories_missing": ["/etc/myapp", "/etc/myapp/conf/"]},
         "/etc/myapp/conf/gunicorn.conf.py", ["/etc/myapp/conf", "/etc/myapp"]),
        # The directory was there before djdeploy: it stays.
        ({**BASELINE, "config_directories_missing": []}, "/etc/gunicorn/gunicorn.conf.py", []),
        # A baseline written before djdeploy kept this: nothing is removed, as before.
        ({"kind": "baseline", "config_present": False}, "/etc/gunicorn/gunicorn.conf.py", []),
        # An entry with a config needs its directory.
        ({**BASELINE, "config_present": True}, "/etc/gunicorn/gunicorn.conf.py", []),
        ({"kind": "tune", "config_present": True, "config_directories_missing": []}, "/etc/gunicorn/gunicorn.conf.py",
         []),
        # Only directories above the config: a config path changed since, or a doctored entry.
        ({**BASELINE, "config_directories_missing": ["/etc/gunicorn", "/etc", "/", "/var/lib"]},
         "/etc/other/gunicorn.conf.py", ["/etc"]),
    ],
)
def test_which_directories_a_restore_removes(entry, config_path, expected):
    assert config_directories_to_remove(entry, config_path) == expected


@given(st.lists(st.sampled_from(["/", "/etc", "/etc/a", "/etc/a/b", "/srv", "/etc/a/b/c"]), max_size=6),
       st.sampled_from(["/etc/a/b/gunicorn.conf.py", "/etc/gunicorn.conf.py", "/srv/x/gunicorn.conf.py"]))
def test_a_restore_removes_only_recorded_directories_above_the_config_never_the_root(recorded, config_path):
    removed = config_directories_to_remove({"config_present": False, "config_directories_missing": recorded},
                                           config_path)
    assert set(removed) <= set(recorded) - {"/"}
    assert all(config_path.startswith(directory + "/") for directory in removed)
    # The deepest first, so each is empty by the time its parent is tried.
    assert removed == sorted(removed, key=len, reverse=True)
