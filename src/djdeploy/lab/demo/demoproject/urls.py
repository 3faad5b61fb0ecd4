import os
import time

from django.conf import settings
from django.urls import path

from shop import views

# A large project's URLconf pulls in most of its code, so importing it is slow. The delay
# makes that cost visible, and the two facts below let a test tell where it was paid:
# in the gunicorn master before fork (preload_app) or in each worker.
time.sleep(settings.DEMO_IMPORT_DELAY)
IMPORTED_AT = time.time()
IMPORT_PID = os.getpid()

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("cpu/", views.cpu, name="cpu"),
    path("io/", views.io, name="io"),
]
