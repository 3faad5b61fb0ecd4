"""A stock Django app, as `django-admin startproject` makes it plus one view: no /healthz, DEBUG
off, ALLOWED_HOSTS without localhost. djdeploy's health check cannot guess such an app's
request: status and tune say which variables to set (and change nothing), and with them set the
tune applies and rolls back with no failed request through nginx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import LabHosts, djdeploy
from djdeploy.lab.load import Load, nginx_failures, summarize

pytestmark = pytest.mark.lab

SITE = "/srv/mysite"
UNIT = "/etc/systemd/system/gunicorn.service"
NGINX_LOG = "/var/log/nginx/access.log"
VIEWS = """\
from django.http import HttpResponse


def index(request):
    return HttpResponse("Hello from mysite")
"""


def start_a_project(lab: LabHosts, host: str = "web01") -> None:
    """startproject, one view at /, DEBUG off, ALLOWED_HOSTS the site's name and the addresses
    clients (and so nginx) use; the lab's unit pointed at it."""
    address = lab.hosts[host]["url"].split("//", 1)[1].split("/", 1)[0].split(":", 1)[0]
    lab.sh(host, f"mkdir -p {SITE} && cd {SITE} && /srv/demo/venv/bin/django-admin startproject mysite .\n"
                 f"cat > mysite/views.py <<'EOF'\n{VIEWS}EOF\n"
                 "sed -i 's/^DEBUG = True/DEBUG = False/; "
                 f"s/^ALLOWED_HOSTS = \\[\\]/ALLOWED_HOSTS = [\"www.example.com\", \"{address}\", \"127.0.0.1\"]/' mysite/settings.py\n"
                 "sed -i 's/^from django.urls import path/from django.urls import path\\n\\nfrom mysite import views/; "
                 "s#^    path(.admin/., admin.site.urls),#    path(\"admin/\", admin.site.urls),\\n    "
                 "path(\"\", views.index),#' mysite/urls.py\n"
                 f"chown -R demo:demo {SITE}\n"
                 f"sed -i 's#^WorkingDirectory=.*#WorkingDirectory={SITE}#; "
                 f"s#demoproject.wsgi:application#mysite.wsgi:application#' {UNIT}\n"
                 "systemctl daemon-reload && systemctl restart gunicorn\n"
                 "for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1/ && exit 0; sleep 0.2; done; exit 1")


@pytest.fixture(scope="module")
def stock_app(lab_factory, tmp_path_factory) -> tuple[LabHosts, str]:
    """The host, and an inventory that tells djdeploy the app's request as its user would."""
    lab = lab_factory("--hosts", "1")
    start_a_project(lab)
    inventory = yaml.safe_load(Path(lab.inventory).read_text())
    inventory["all"]["vars"].update(gunicorn_health_path="/", gunicorn_verify_host_header="www.example.com")
    told = tmp_path_factory.mktemp("stock") / "inventory.yml"
    told.write_text(yaml.safe_dump(inventory))
    return lab, str(told)


def record_of(run) -> dict:
    assert run.stdout, run.stderr
    return json.loads(run.stdout)["hosts"]["web01"]


def test_the_stock_app_serves_through_nginx_and_has_no_health_endpoint(stock_app):
    lab, _ = stock_app
    assert lab.sh("web01", "curl -s http://127.0.0.1/") == "Hello from mysite"
    assert lab.sh("web01", "curl -s -o /dev/null -w '%{http_code}' -H 'Host: www.example.com' "
                           "http://127.0.0.1:8000/healthz") == "404"


def test_status_names_the_host_header_variable_the_app_needs(stock_app):
    lab, _ = stock_app
    record = record_of(djdeploy("status", "web01", "--json", lab=lab.name))
    assert (record["outcome"], record["health"]["status"]) == ("unhealthy", 400), record
    assert "set gunicorn_verify_host_header to a host the app allows" in record["health"]["advice"]


@pytest.mark.parametrize(("told", "status", "variable"), [
    ({}, 400, "set gunicorn_verify_host_header to a host the app allows"),
    ({"gunicorn_verify_host_header": "www.example.com"}, 404, "set gunicorn_health_path to a path that answers GET with 200"),
], ids=["as found", "with the Host header only"])
@pytest.mark.covers(kind="fault", case="a stock Django app: no /healthz, ALLOWED_HOSTS without localhost", exit_code=2,
                    end="refused before any change, naming gunicorn_verify_host_header, then gunicorn_health_path")
def test_tune_refuses_naming_the_variable_and_changes_nothing(stock_app, tmp_path, told, status, variable):
    lab, _ = stock_app
    inventory = yaml.safe_load(Path(lab.inventory).read_text())
    inventory["all"]["vars"].update(told)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    before = lab.sh("web01", f"sha256sum {UNIT}; systemctl show -p MainPID --value gunicorn")
    done = djdeploy("tune", "web01", "-i", str(path), "--json")
    record = record_of(done)
    assert (done.returncode, record["outcome"]) == (2, "refused"), record
    assert f"answered {status}" in record["message"] and variable in record["message"], record["message"]
    assert lab.sh("web01", f"sha256sum {UNIT}; systemctl show -p MainPID --value gunicorn") == before
    assert lab.exec("web01", "test", "-e", "/etc/gunicorn/gunicorn.conf.py").returncode != 0


def test_told_the_apps_request_tune_and_rollback_fail_no_request(stock_app):
    lab, told = stock_app
    unit_before = lab.sh("web01", f"sha256sum {UNIT}")
    offset = int(lab.sh("web01", f"stat -c %s {NGINX_LOG}"))
    with Load(lab.hosts["web01"]["url"], connections=2, rate=5, max_seconds=600, host_header="www.example.com") as load:
        status = djdeploy("status", "web01", "-i", told, "--json")
        tuned = djdeploy("tune", "web01", "-i", told, "--json")
        again = djdeploy("tune", "web01", "-i", told, "--json")
        back = djdeploy("rollback", "web01", "-i", told, "--json")
    summary = summarize(load.samples())
    nginx = nginx_failures(lab.sh("web01", f"tail -c +{offset + 1} {NGINX_LOG}").splitlines())
    assert summary["requests"] > 10 and (summary["failed"], summary["errors"], nginx) == (0, [], {}), summary
    assert record_of(status)["health"]["status"] == 200
    tuned_record = record_of(tuned)
    assert (tuned.returncode, tuned_record["outcome"]) == (0, "applied"), tuned_record
    assert tuned_record["reasons"]["bind"] == "bind=127.0.0.1:8000: kept from command line"
    assert (again.returncode, record_of(again)["outcome"]) == (0, "unchanged"), again.stdout
    assert (back.returncode, record_of(back)["outcome"]) == (0, "applied"), back.stdout
    assert lab.sh("web01", f"sha256sum {UNIT}") == unit_before
    assert lab.sh("web01", "curl -s http://127.0.0.1/") == "Hello from mysite"
