"""Settings for the lab demo project.

Everything host-specific comes from the environment; the defaults are enough for
``manage.py check`` to pass on any machine.
"""

import os

from django.core.exceptions import ImproperlyConfigured


def _non_negative_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ImproperlyConfigured(f"{name} must not be negative, got {raw!r}")
    return value


def _http_status(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 100 <= int(raw) <= 599:
        raise ImproperlyConfigured(f"{name} must be an HTTP status from 100 to 599, got {raw!r}")
    return int(raw)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


# Fault knobs: the lab's fault tests put these in an EnvironmentFile to break the app the
# way a bad deploy would, and djdeploy must notice. Unset, the app is healthy.
if _flag("DEMO_FAIL_IMPORT"):
    raise ImportError("the demo app cannot be imported: DEMO_FAIL_IMPORT is set")


SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY",
    "insecure-lab-demo-key-do-not-use-anywhere-real",
)

DEBUG = False

# Lab hosts are reached through throwaway container names and addresses that are not
# known when the image is baked; nginx in front is the only client. Never do this in production.
# DEMO_ALLOWED_HOSTS (comma-separated) narrows it, as a production settings file would: a fault
# knob for a health check sent with a Host the app refuses.
ALLOWED_HOSTS = [host.strip() for host in os.environ.get("DEMO_ALLOWED_HOSTS", "*").split(",") if host.strip()]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "shop",
]

MIDDLEWARE = [
    "demoproject.middleware.worker_pid_header",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "demoproject.urls"
WSGI_APPLICATION = "demoproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB_PATH", "/srv/demo/data/db.sqlite3"),
        # Several gunicorn workers share one file; wait for a lock instead of failing at once.
        "OPTIONS": {"timeout": 20},
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Stands in for the import cost of a large project's URLconf (see demoproject/urls.py).
DEMO_IMPORT_DELAY = _non_negative_float("DEMO_IMPORT_DELAY", 0.0)

# More fault knobs, read where they bite: a URLconf that no longer loads (demoproject/urls.py)
# and a /healthz that answers with another status or late (shop/views.py).
DEMO_BROKEN_URLCONF = _flag("DEMO_BROKEN_URLCONF")
DEMO_HEALTH_STATUS = _http_status("DEMO_HEALTH_STATUS", 200)
DEMO_HEALTH_DELAY = _non_negative_float("DEMO_HEALTH_DELAY", 0.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        },
    },
    # Replaces Django's default "django" handlers, which only print when DEBUG is on.
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
