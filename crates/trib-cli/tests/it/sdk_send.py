"""Sends one of each call through an official Python SDK and prints what it sent as JSON.

usage: sdk_send.py segment|rudder HOST WRITE_KEY [--gzip]
"""
import json
import sys

sdk, host, write_key = sys.argv[1], sys.argv[2], sys.argv[3]
gzip = "--gzip" in sys.argv[4:]
errors = []

if sdk == "segment":
    from segment.analytics.client import Client
elif sdk == "rudder":
    from rudderstack.analytics.client import Client
else:
    raise SystemExit(f"unknown sdk {sdk}")

client = Client(write_key, host=host, gzip=gzip, max_retries=6, on_error=lambda error, batch: errors.append(repr(error)), upload_size=20)
sent = []


def keep(result):
    ok, message = result
    assert ok, message
    sent.append(message)


keep(client.identify("user-42", {"email": "ada@example.com", "firstName": "Ada", "plan": "pro", "logins": 7}))
keep(client.track("user-42", "Order Completed", {"order_id": "o-1", "revenue": 99.95, "currency": "EUR", "products": [{"sku": "s-1", "quantity": 2}]}))
keep(client.page("user-42", "Docs", "Getting started", {"path": "/docs/start", "referrer": "https://example.org/"}))
keep(client.screen("user-42", "Onboarding", "Welcome", {"step": 1}))
keep(client.group("user-42", "grp-7", {"name": "Acme", "employees": 120}))
keep(client.alias("anon-9f3", "user-42"))
keep(client.track(anonymous_id="anon-9f3", event="Product Viewed", properties={"sku": "s-1", "name": "Café crème ☕"}))
for i in range(40):
    keep(client.track("user-%d" % i, "Batch Filler", {"i": i}))
client.flush()
client.join()
print(json.dumps({"sent": sent, "errors": errors}, default=str))
