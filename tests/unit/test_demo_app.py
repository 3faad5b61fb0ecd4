"""The demo Django project that is baked into lab hosts (src/djdeploy/lab/demo).

The project is plain files copied to the hosts, not part of the djdeploy package, so it is
put on sys.path here. Django can be set up only once per process: everything that needs
different settings runs in a subprocess.
"""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEMO_DIR = Path(__file__).resolve().parents[2] / "src" / "djdeploy" / "lab" / "demo"
SRC_DIR = DEMO_DIR.parents[2]
ENDPOINTS = {
    "/healthz": "application/json",
    "/dashboard/": "text/html; charset=utf-8",
    "/cpu/": "application/json",
    "/io/": "application/json",
}


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    """A migrated and seeded demo database, with Django set up to use it."""
    db_path = tmp_path_factory.mktemp("demo") / "db.sqlite3"
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(DEMO_DIR))
        mp.setenv("DJANGO_SETTINGS_MODULE", "demoproject.settings")
        mp.setenv("DEMO_DB_PATH", str(db_path))
        mp.delenv("DEMO_IMPORT_DELAY", raising=False)

        import django
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections

        django.setup()
        assert settings.DATABASES["default"]["NAME"] == str(db_path), (
            "Django was configured before this module ran; run it in its own process"
        )
        call_command("migrate", interactive=False, verbosity=0)
        call_command("seed_demo", stdout=io.StringIO())
        yield db_path
        connections.close_all()


@pytest.fixture
def client(demo_db):
    from django.test import Client

    return Client()


def run_in_demo(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the interpreter in the demo directory, as a lab host's service would."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DEMO_"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=DEMO_DIR,
        env={
            **inherited,
            "DJANGO_SETTINGS_MODULE": "demoproject.settings",
            "PYTHONPATH": str(DEMO_DIR),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("path", "content_type"), ENDPOINTS.items())
def test_endpoint_answers_with_its_content_type_and_worker_pid(client, path, content_type):
    response = client.get(path)

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["X-Demo-Pid"] == str(os.getpid())


def test_pid_header_is_also_set_on_errors_and_redirects(client):
    assert client.get("/no-such-page/")["X-Demo-Pid"] == str(os.getpid())
    redirect = client.get("/dashboard")
    assert redirect.status_code == 301
    assert redirect["X-Demo-Pid"] == str(os.getpid())


def test_healthz_reports_where_the_urlconf_was_imported(client):
    body = client.get("/healthz").json()

    assert body["status"] == "ok"
    assert body["pid"] == os.getpid()
    assert body["ppid"] == os.getppid()
    assert body["urlconf_import_pid"] == os.getpid()
    assert 0 < body["urlconf_imported_at"] <= time.time()


def test_healthz_does_not_touch_the_database(client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        client.get("/healthz")

    assert len(queries) == 0


def test_dashboard_shows_seeded_data(client):
    from shop.models import Category, Order

    html = client.get("/dashboard/").content.decode()

    for category in Category.objects.all():
        assert category.name in html
    newest = Order.objects.order_by("-placed_at").first()
    assert newest.number in html
    assert newest.product.name in html
    assert "No categories yet" not in html


def test_dashboard_query_count_does_not_grow_with_rows(client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        client.get("/dashboard/")

    # One query per table on the page; a per-row lookup would show up as dozens.
    assert len(queries) <= 5


def test_cpu_endpoint_burns_cpu_time_in_the_request(client):
    started = time.thread_time()
    body = client.get("/cpu/").json()

    assert time.thread_time() - started >= 0.020
    assert body["rounds"] > 0
    int(body["checksum"], 16)


def test_io_endpoint_waits_without_cpu(client):
    started = time.perf_counter()
    body = client.get("/io/").json()

    assert time.perf_counter() - started >= 0.050
    assert body["waited"] >= 0.050


def test_seed_adds_a_few_hundred_rows(demo_db):
    from shop.models import Category, Order, Product

    assert Category.objects.count() == 8
    assert Product.objects.count() == 80
    assert Order.objects.count() == 400


def test_seeding_twice_does_not_duplicate(demo_db):
    from django.core.management import call_command
    from shop.models import Category, Order, Product

    def snapshot():
        return [
            sorted(Category.objects.values_list("slug", "name")),
            sorted(Product.objects.values_list("sku", "category__slug", "price", "stock")),
            sorted(Order.objects.values_list("number", "product__sku", "quantity", "status", "placed_at")),
        ]

    before = snapshot()
    out = io.StringIO()
    call_command("seed_demo", stdout=out)

    assert snapshot() == before
    assert "added 0 categories, 0 products, 0 orders" in out.getvalue()


def test_seed_data_is_deterministic(demo_db):
    import random

    from shop.management.commands.seed_demo import SEED, build_specs

    assert build_specs(random.Random(SEED)) == build_specs(random.Random(SEED))


def test_import_delay_env_is_honoured():
    code = (
        "import json, os, time, django\n"
        "django.setup()\n"
        "started = time.perf_counter()\n"
        "import demoproject.urls as urls\n"
        "print(json.dumps({'elapsed': time.perf_counter() - started,"
        " 'pid': os.getpid(), 'import_pid': urls.IMPORT_PID}))\n"
    )
    result = run_in_demo("-c", code, DEMO_IMPORT_DELAY="0.3")

    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["elapsed"] >= 0.3
    assert facts["import_pid"] == facts["pid"]


def test_loading_the_wsgi_app_leaves_the_urlconf_lazy():
    # Like a real Django app, the URLconf is imported on the first request, not when the WSGI
    # module loads: warming it before workers accept requests is djdeploy's job.
    code = (
        "import sys\n"
        "import demoproject.wsgi\n"
        "assert 'demoproject.urls' not in sys.modules\n"
    )
    result = run_in_demo("-c", code)

    assert result.returncode == 0, result.stderr


def test_invalid_import_delay_is_rejected():
    result = run_in_demo("-c", "import django; django.setup()", DEMO_IMPORT_DELAY="soon")

    assert result.returncode != 0
    assert "DEMO_IMPORT_DELAY" in result.stderr


def test_manage_check_passes_with_default_settings():
    result = run_in_demo("manage.py", "check")

    assert result.returncode == 0, result.stderr


def test_demo_is_not_part_of_the_djdeploy_package():
    assert not (DEMO_DIR / "__init__.py").exists()
    code = (
        "import sys, djdeploy\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in {'demoproject', 'shop'})\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr


# --- fault knobs: the lab's fault tests break the app through its environment ---


def test_healthz_answers_the_status_the_fault_knob_asks_for(client):
    from django.test import override_settings

    with override_settings(DEMO_HEALTH_STATUS=500):
        response = client.get("/healthz")

    assert response.status_code == 500
    assert response.json()["status"] == "failing"


def test_healthz_answers_late_when_the_fault_knob_asks(client):
    from django.test import override_settings

    started = time.perf_counter()
    with override_settings(DEMO_HEALTH_DELAY=0.2):
        assert client.get("/healthz").status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_fault_knobs_are_read_from_the_environment():
    code = (
        "import json, django\n"
        "django.setup()\n"
        "from django.conf import settings as s\n"
        "print(json.dumps([s.DEMO_HEALTH_STATUS, s.DEMO_HEALTH_DELAY, s.DEMO_BROKEN_URLCONF, s.ALLOWED_HOSTS]))\n"
    )
    unset = run_in_demo("-c", code)
    faulty = run_in_demo("-c", code, DEMO_HEALTH_STATUS="503", DEMO_HEALTH_DELAY="2.5", DEMO_BROKEN_URLCONF="1",
                         DEMO_ALLOWED_HOSTS="shop.example, www.shop.example")

    assert json.loads(unset.stdout) == [200, 0.0, False, ["*"]], unset.stderr
    assert json.loads(faulty.stdout) == [503, 2.5, True, ["shop.example", "www.shop.example"]], faulty.stderr


@pytest.mark.parametrize("status", ["fine", "42", "600"])
def test_a_health_status_knob_that_is_no_http_status_is_rejected(status):
    result = run_in_demo("-c", "import django; django.setup()", DEMO_HEALTH_STATUS=status)

    assert result.returncode != 0
    assert "DEMO_HEALTH_STATUS must be an HTTP status" in result.stderr


def test_the_fail_import_knob_makes_the_wsgi_module_fail_to_import():
    result = run_in_demo("-c", "import demoproject.wsgi", DEMO_FAIL_IMPORT="1")

    assert result.returncode != 0
    assert "ImportError: the demo app cannot be imported: DEMO_FAIL_IMPORT is set" in result.stderr


def test_the_broken_urlconf_knob_breaks_the_urlconf_but_not_the_wsgi_import():
    code = (
        "import demoproject.wsgi\n"
        "from django.urls import get_resolver\n"
        "get_resolver().url_patterns\n"
    )
    result = run_in_demo("-c", code, DEMO_BROKEN_URLCONF="1")

    assert result.returncode != 0
    assert "demoproject.urls is broken: DEMO_BROKEN_URLCONF is set" in result.stderr
    assert run_in_demo("-c", "import demoproject.wsgi", DEMO_BROKEN_URLCONF="1").returncode == 0
