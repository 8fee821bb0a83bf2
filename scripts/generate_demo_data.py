#!/usr/bin/env python3
"""Generates the bundled demo data in crates/trib-cli/demo/ (deterministic: seeded).

Four sources, as a small online shop would have them:
  website.ndjson     analytics.js-style page views, product views, sign-ups (identify), aliases
  mobile_app.ndjson  app screens and taps from the iOS/Android apps
  backend.ndjson     server-side "Order Completed" events with products and revenue
  crm.ndjson         CRM export replayed as identify calls with profile traits, and group calls
All people, emails and phone numbers are invented (example.com / example.org domains,
555 phone numbers).
"""
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

random.seed(20261128)
OUT = Path(__file__).resolve().parent.parent / "crates" / "trib-cli" / "demo"
START = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)

FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Katherine", "Dennis", "Barbara", "Ken", "Frances",
         "Edsger", "Radia", "Donald", "Sophie", "Tim", "Hedy", "John", "Joan", "Guido", "Anita",
         "José", "Zoë", "Björn", "Søren", "Mei", "Aiko", "Priya", "Olusegun", "Chloé", "Łukasz"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Johnson", "Ritchie", "Liskov", "Thompson",
        "Allen", "Dijkstra", "Perlman", "Knuth", "Wilson", "Berners-Lee", "Lamarr", "Backus", "Clarke",
        "van Rossum", "Borg", "Núñez", "Müller", "Andersson", "Kierkegaard", "Chen", "Tanaka", "Patel",
        "Obasanjo", "Lefèvre", "Wróbel"]
CITIES = [("Paris", "FR"), ("Berlin", "DE"), ("London", "GB"), ("Madrid", "ES"), ("Austin", "US"),
          ("Toronto", "CA"), ("Tokyo", "JP"), ("Lagos", "NG"), ("Warsaw", "PL"), ("Oslo", "NO")]
PRODUCTS = [("sku-101", "Trail Running Shoes", 129.0, "Shoes"), ("sku-102", "Rain Jacket", 89.5, "Outerwear"),
            ("sku-103", "Merino Socks", 14.0, "Accessories"), ("sku-104", "Hydration Vest", 74.99, "Gear"),
            ("sku-105", "Headlamp", 39.0, "Gear"), ("sku-106", "Running Cap", 22.0, "Accessories")]
PAGES = [("/", "Home"), ("/shoes", "Shoes"), ("/outerwear", "Outerwear"), ("/gear", "Gear"),
         ("/blog/ultra-training", "Ultra training plan"), ("/cart", "Cart"), ("/checkout", "Checkout")]
SCREENS = ["Home", "Product Detail", "Cart", "Order History", "Settings", "Training Log"]
COMPANIES = [("grp-acme", "Acme Running Club", 120), ("grp-peak", "Peak Trail Team", 35), ("grp-city", "City Harriers", 260)]


def iso(moment):
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mid():
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def context(library, extra=None):
    ctx = {"library": library, "ip": f"198.51.100.{random.randint(1, 254)}", "locale": random.choice(["en-US", "fr-FR", "de-DE", "ja-JP"])}
    if extra:
        ctx.update(extra)
    return ctx


people = []
for index in range(40):
    first, last = FIRST[index % len(FIRST)], LAST[(index * 7) % len(LAST)]
    city, country = random.choice(CITIES)
    people.append({
        "user_id": f"user-{1000 + index}",
        "anonymous_id": mid(),
        "email": f"{first.lower().replace('é', 'e').replace('ö', 'o').replace('ø', 'o').replace('ë', 'e').replace('ł', 'l')}.{index}@example.com",
        "first_name": first,
        "last_name": last,
        "phone": f"+1 (512) 555-{1000 + index:04d}",
        "city": city,
        "country": country,
        "plan": random.choice(["free", "plus", "pro"]),
    })

web, app, backend, crm = [], [], [], []
web_library = {"name": "analytics.js", "version": "next-1.70.0"}
app_library = {"name": "analytics-ios", "version": "4.1.8"}
for person in people:
    t = START + timedelta(minutes=random.randint(0, 60 * 24 * 20))
    page_context = lambda path, title: context(web_library, {"page": {"path": path, "title": title, "url": f"https://shop.example.com{path}"}, "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"})
    for _ in range(random.randint(2, 6)):
        path, title = random.choice(PAGES)
        t += timedelta(seconds=random.randint(5, 600))
        web.append({"type": "page", "messageId": mid(), "anonymousId": person["anonymous_id"], "name": title,
                    "properties": {"path": path, "title": title, "url": f"https://shop.example.com{path}", "referrer": random.choice(["", "https://www.example.org/search?q=trail+shoes"])},
                    "context": page_context(path, title), "timestamp": iso(t)})
        if path in ("/shoes", "/outerwear", "/gear"):
            sku, name, price, category = random.choice(PRODUCTS)
            web.append({"type": "track", "messageId": mid(), "anonymousId": person["anonymous_id"], "event": "Product Viewed",
                        "properties": {"product_id": sku, "name": name, "price": price, "category": category, "currency": "EUR"},
                        "context": page_context(path, title), "timestamp": iso(t + timedelta(seconds=3))})
    if random.random() < 0.8:
        t += timedelta(minutes=2)
        web.append({"type": "identify", "messageId": mid(), "anonymousId": person["anonymous_id"], "userId": person["user_id"],
                    "traits": {"email": person["email"], "firstName": person["first_name"]},
                    "context": page_context("/signup", "Sign up"), "timestamp": iso(t)})
        web.append({"type": "alias", "messageId": mid(), "previousId": person["anonymous_id"], "userId": person["user_id"],
                    "context": page_context("/signup", "Sign up"), "timestamp": iso(t)})
    if random.random() < 0.6:
        device = {"id": mid(), "manufacturer": "Apple", "model": "iPhone15,2", "type": "ios"}
        for _ in range(random.randint(2, 5)):
            t += timedelta(minutes=random.randint(1, 90))
            app.append({"type": "screen", "messageId": mid(), "userId": person["user_id"], "name": random.choice(SCREENS),
                        "properties": {"seconds_on_screen": random.randint(2, 240)},
                        "context": context(app_library, {"device": device, "app": {"name": "Trailhead", "version": "3.4.1", "build": "341"}, "os": {"name": "iOS", "version": "19.1"}}),
                        "timestamp": iso(t)})
        app.append({"type": "track", "messageId": mid(), "userId": person["user_id"], "event": "Workout Logged",
                    "properties": {"distance_km": round(random.uniform(3, 42), 1), "duration_min": random.randint(18, 300), "terrain": random.choice(["road", "trail", "track"])},
                    "context": context(app_library, {"device": device}), "timestamp": iso(t + timedelta(minutes=5))})
    for _ in range(random.choice([0, 0, 1, 1, 2, 3])):
        t += timedelta(hours=random.randint(1, 72))
        items = random.sample(PRODUCTS, random.randint(1, 3))
        products = [{"product_id": sku, "name": name, "price": price, "category": category, "quantity": random.randint(1, 2)} for sku, name, price, category in items]
        revenue = round(sum(p["price"] * p["quantity"] for p in products), 2)
        backend.append({"type": "track", "messageId": mid(), "userId": person["user_id"], "event": "Order Completed",
                        "properties": {"order_id": f"ord-{random.randint(100000, 999999)}", "revenue": revenue, "currency": "EUR", "products": products, "coupon": random.choice([None, "WELCOME10"])},
                        "context": {"library": {"name": "analytics-python", "version": "2.3.4"}}, "timestamp": iso(t)})
    crm.append({"type": "identify", "messageId": f"crm-{person['user_id']}-v1", "userId": person["user_id"],
                "traits": {"email": person["email"], "firstName": person["first_name"], "lastName": person["last_name"], "phone": person["phone"],
                           "address": {"city": person["city"], "country": person["country"]}, "plan": person["plan"],
                           "createdAt": iso(START - timedelta(days=random.randint(30, 900)))},
                "context": {"library": {"name": "crm-export", "version": "1"}}, "timestamp": iso(START + timedelta(days=21))})
    if random.random() < 0.4:
        group_id, group_name, employees = random.choice(COMPANIES)
        crm.append({"type": "group", "messageId": f"crm-{person['user_id']}-{group_id}", "userId": person["user_id"], "groupId": group_id,
                    "traits": {"name": group_name, "members": employees},
                    "context": {"library": {"name": "crm-export", "version": "1"}}, "timestamp": iso(START + timedelta(days=21))})

OUT.mkdir(parents=True, exist_ok=True)
for name, rows in [("website", web), ("mobile_app", app), ("backend", backend), ("crm", crm)]:
    rows.sort(key=lambda row: row["timestamp"])
    with open(OUT / f"{name}.ndjson", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)} messages")
