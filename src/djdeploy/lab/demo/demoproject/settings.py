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


SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY",
    "insecure-lab-demo-key-do-not-use-anywhere-real",
)

DEBUG = False

# Lab hosts are reached through throwaway container names and addresses that are not
# known when the image is baked; nginx in front is the only client. Never do this in production.
ALLOWED_HOSTS = ["*"]

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
