import os
import time
from decimal import Decimal
from importlib import import_module

from django.conf import settings
from django.db.models import Count, DecimalField, F, Q, Sum, Value, Window
from django.db.models.functions import Coalesce, RowNumber
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from .models import Category, Order, Product

CPU_SECONDS = 0.020
IO_SECONDS = 0.050
TOP_PRODUCTS_PER_CATEGORY = 3
RECENT_ORDERS = 20

_MONEY = DecimalField(max_digits=14, decimal_places=2)
_ZERO = Value(Decimal("0.00"), output_field=_MONEY)


@require_safe
def healthz(request):
    # Looked up lazily: importing the URLconf at module level would be circular.
    urlconf = import_module(settings.ROOT_URLCONF)
    # Fault knobs (demoproject/settings.py): a slow or failing health check.
    time.sleep(settings.DEMO_HEALTH_DELAY)
    healthy = settings.DEMO_HEALTH_STATUS == 200
    return JsonResponse(
        {
            "status": "ok" if healthy else "failing",
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "urlconf_imported_at": urlconf.IMPORTED_AT,
            "urlconf_import_pid": urlconf.IMPORT_PID,
        },
        status=settings.DEMO_HEALTH_STATUS,
    )


@require_safe
def dashboard(request):
    sold = ~Q(orders__status=Order.Status.CANCELLED)
    revenue = Coalesce(
        Sum(F("orders__quantity") * F("orders__unit_price"), filter=sold, output_field=_MONEY),
        _ZERO,
    )

    categories = Category.objects.annotate(
        product_count=Count("products", distinct=True),
        order_count=Count("products__orders", filter=~Q(products__orders__status=Order.Status.CANCELLED)),
        revenue=Coalesce(
            Sum(
                F("products__orders__quantity") * F("products__orders__unit_price"),
                filter=~Q(products__orders__status=Order.Status.CANCELLED),
                output_field=_MONEY,
            ),
            _ZERO,
        ),
    ).order_by("-revenue", "name")

    top_products = (
        Product.objects.select_related("category")
        .annotate(units_sold=Coalesce(Sum("orders__quantity", filter=sold), 0), revenue=revenue)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=F("category_id"),
                order_by=[F("revenue").desc(), F("sku").asc()],
            )
        )
        .filter(rank__lte=TOP_PRODUCTS_PER_CATEGORY)
        .order_by("category__name", "rank")
    )

    recent_orders = Order.objects.select_related("product__category").order_by("-placed_at")[
        :RECENT_ORDERS
    ]

    totals = Order.objects.exclude(status=Order.Status.CANCELLED).aggregate(
        orders=Count("id"),
        units=Coalesce(Sum("quantity"), 0),
        revenue=Coalesce(Sum(F("quantity") * F("unit_price"), output_field=_MONEY), _ZERO),
    )

    return render(
        request,
        "shop/dashboard.html",
        {
            "categories": categories,
            "top_products": top_products,
            "recent_orders": recent_orders,
            "totals": totals,
            "pid": os.getpid(),
        },
    )


@require_safe
def cpu(request):
    # Measured in CPU time of this thread, not wall time, so each request does the same
    # work however many workers compete for the cores. Plain Python arithmetic holds the
    # GIL throughout, like typical view code does.
    deadline = time.thread_time() + CPU_SECONDS
    checksum = 2166136261
    rounds = 0
    while time.thread_time() < deadline:
        # Reading the clock is a syscall; keep it out of the hot loop.
        for _ in range(1000):
            checksum = ((checksum ^ rounds) * 16777619) & 0xFFFFFFFF
            rounds += 1
    return JsonResponse({"pid": os.getpid(), "rounds": rounds, "checksum": f"{checksum:08x}"})


@require_safe
def io(request):
    started = time.perf_counter()
    time.sleep(IO_SECONDS)
    return JsonResponse({"pid": os.getpid(), "waited": round(time.perf_counter() - started, 4)})
