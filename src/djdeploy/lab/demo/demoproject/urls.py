import os
import time

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import path

from shop import views

# A large project's URLconf pulls in most of its code, so importing it is slow. The delay
# makes that cost visible, and the two facts below let a test tell where it was paid:
# in the gunicorn master before fork (preload_app) or in each worker.
time.sleep(settings.DEMO_IMPORT_DELAY)
IMPORTED_AT = time.time()
IMPORT_PID = os.getpid()

if settings.DEMO_BROKEN_URLCONF:
    # Like a urls.py naming a view that a deploy renamed: the app module imports, and only
    # loading the URLconf (the first request, or a warm-up) fails.
    raise ImproperlyConfigured("demoproject.urls is broken: DEMO_BROKEN_URLCONF is set")

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("cpu/", views.cpu, name="cpu"),
    path("io/", views.io, name="io"),
]
