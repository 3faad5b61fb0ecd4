import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.text import slugify

from shop.models import Category, Order, Product

# Fixed seed and epoch: every host gets identical data, so measurements are comparable.
SEED = 20250101
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
ORDER_WINDOW_MINUTES = 90 * 24 * 60
ORDER_COUNT = 400
CUSTOMER_COUNT = 120

CATALOGUE = {
    "Books": ["Novel", "Cookbook", "Atlas", "Biography", "Field Guide"],
    "Coffee": ["Espresso Beans", "Filter Roast", "Grinder", "Kettle", "Dripper"],
    "Garden": ["Trowel", "Seed Mix", "Planter", "Hose", "Pruner"],
    "Hardware": ["Hammer", "Drill Bits", "Spirit Level", "Tape Measure", "Wrench"],
    "Kitchen": ["Chef Knife", "Skillet", "Cutting Board", "Whisk", "Dutch Oven"],
    "Office": ["Notebook", "Desk Lamp", "Stapler", "Fountain Pen", "Monitor Arm"],
    "Outdoor": ["Tent", "Headlamp", "Water Bottle", "Daypack", "Camp Stove"],
    "Toys": ["Puzzle", "Kite", "Building Blocks", "Yo-yo", "Board Game"],
}
EDITIONS = ["Classic", "Pro"]
QUANTITIES = [1, 1, 1, 2, 2, 3, 5]
STATUS_WEIGHTS = {
    Order.Status.PENDING: 10,
    Order.Status.PAID: 25,
    Order.Status.SHIPPED: 55,
    Order.Status.CANCELLED: 10,
}


class ProductSpec(NamedTuple):
    category_slug: str
    sku: str
    name: str
    price: Decimal
    stock: int


class OrderSpec(NamedTuple):
    number: str
    sku: str
    customer_email: str
    quantity: int
    unit_price: Decimal
    status: str
    placed_at: datetime


def build_specs(rng: random.Random) -> tuple[list[ProductSpec], list[OrderSpec]]:
    """Draw the whole data set up front, so it never depends on what is already stored."""
    products = []
    for category, items in CATALOGUE.items():
        variants = [f"{item} {edition}" for item in items for edition in EDITIONS]
        for index, name in enumerate(variants, start=1):
            products.append(
                ProductSpec(
                    category_slug=slugify(category),
                    sku=f"{category[:3].upper()}-{index:03d}",
                    name=name,
                    price=Decimal(rng.randrange(299, 19999)) / 100,
                    stock=rng.randrange(0, 250),
                )
            )

    statuses, weights = zip(*STATUS_WEIGHTS.items())
    orders = []
    for number in range(1, ORDER_COUNT + 1):
        product = rng.choice(products)
        orders.append(
            OrderSpec(
                number=f"D-{number:05d}",
                sku=product.sku,
                customer_email=f"customer{rng.randrange(1, CUSTOMER_COUNT + 1):03d}@example.test",
                quantity=rng.choice(QUANTITIES),
                unit_price=product.price,
                status=rng.choices(statuses, weights)[0],
                placed_at=EPOCH + timedelta(minutes=rng.randrange(ORDER_WINDOW_MINUTES)),
            )
        )
    return products, orders


class Command(BaseCommand):
    help = "Load a fixed demo catalogue and order history. Running it again adds nothing."

    def handle(self, *args, **options):
        product_specs, order_specs = build_specs(random.Random(SEED))

        with transaction.atomic():
            before = self._counts()
            # The unique natural keys (slug, sku, number) turn repeated inserts into no-ops.
            Category.objects.bulk_create(
                [Category(name=name, slug=slugify(name)) for name in CATALOGUE],
                ignore_conflicts=True,
            )
            category_ids = dict(Category.objects.values_list("slug", "id"))
            Product.objects.bulk_create(
                [
                    Product(
                        category_id=category_ids[spec.category_slug],
                        sku=spec.sku,
                        name=spec.name,
                        price=spec.price,
                        stock=spec.stock,
                    )
                    for spec in product_specs
                ],
                ignore_conflicts=True,
            )
            product_ids = dict(Product.objects.values_list("sku", "id"))
            Order.objects.bulk_create(
                [
                    Order(
                        number=spec.number,
                        product_id=product_ids[spec.sku],
                        customer_email=spec.customer_email,
                        quantity=spec.quantity,
                        unit_price=spec.unit_price,
                        status=spec.status,
                        placed_at=spec.placed_at,
                    )
                    for spec in order_specs
                ],
                ignore_conflicts=True,
            )
            after = self._counts()

        added = ", ".join(f"{after[name] - before[name]} {name}" for name in after)
        self.stdout.write(f"seed_demo: added {added}")

    @staticmethod
    def _counts() -> dict[str, int]:
        return {
            "categories": Category.objects.count(),
            "products": Product.objects.count(),
            "orders": Order.objects.count(),
        }
