"""Load the WSGI app, its Django URLconf and the worker class the way gunicorn's workers
will, as the service user, with the unit's environment. `gunicorn --check-config` alone
imports the app module but not the URLconf and not the worker class (with gunicorn 27.0.1 a
broken urls.py and an unknown worker class both pass it)."""

import os
import sys


def main(app_spec: str, worker_class: str) -> None:
    sys.path.insert(0, os.getcwd())
    from gunicorn.util import import_app, load_class

    try:
        load_class(worker_class, default="gunicorn.workers.sync.SyncWorker", section="gunicorn.workers")
    except Exception as exc:  # gunicorn wraps every import failure in a RuntimeError
        sys.exit(f"worker_class {worker_class!r} cannot be loaded in this venv: {_cause(exc)}")
    try:
        import_app(app_spec)
        if "django" in sys.modules:
            from django.conf import settings

            if settings.configured:
                from django.urls import get_resolver

                # Importing the URLconf imports every view module it names.
                get_resolver().url_patterns
    except Exception as exc:
        sys.exit(f"app {app_spec} cannot be loaded: {_cause(exc)}")
    print(f"app {app_spec} and worker class {worker_class} load")


def _cause(exc: Exception) -> str:
    """One line that names the cause: the innermost exception, which gunicorn's RuntimeError
    carries as the last line of a formatted traceback."""
    lines = [line.strip(" []") for line in str(exc).splitlines() if line.strip(" []")]
    return lines[-1] if len(lines) > 1 else f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
