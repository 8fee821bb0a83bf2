//! Rough validation cost per event against the example registry, on one thread.
//!
//! `cargo run --release -p trib-schema --example validate_throughput [iterations]`
//!
//! Prints nanoseconds per call for valid and invalid payloads. Not a benchmark suite: the
//! numbers are for sizing (the ingestion target is 200k records/s on 2 cores overall).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};
use trib_schema::{Registry, Validation};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: u32 = match std::env::args().nth(1) {
        Some(text) => text.parse()?,
        None => 200_000,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples/schemas");
    let registry = Registry::load(dir)?;

    let order = json!({
        "order_id": "50314b8e9bcf000000000000",
        "total": 27.5, "revenue": 25.0, "shipping": 3, "tax": 2, "discount": 2.5,
        "coupon": "hasbros", "currency": "USD",
        "products": [
            {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly: 3rd Edition",
             "price": 19, "quantity": 1, "category": "Games", "url": "https://www.example.com/product/path",
             "image_url": "https://www.example.com/product/path.jpg"},
            {"product_id": "505bd76785ebb509fc183733", "sku": "46493-32", "name": "Uno Card Game",
             "price": 3, "quantity": 2, "category": "Games"}
        ]
    });
    let viewed = json!({"product_id": "507f1f77bcf86cd799439011", "sku": "G-32", "category": "Games",
        "name": "Monopoly: 3rd Edition", "brand": "Hasbro", "price": 18.99, "quantity": 1,
        "currency": "USD", "position": 3, "value": 18.99, "url": "https://www.example.com/product/path"});
    let traits = json!({"email": "peter@example.com", "firstName": "Peter", "lastName": "Gibbons",
        "phone": "+14155550123", "plan": "pro", "createdAt": "2024-05-01T12:00:00Z",
        "address": {"street": "6th St", "city": "San Francisco", "state": "CA", "postalCode": "94103", "country": "US"}});
    let mut bad_order = order.clone();
    bad_order["products"][1]["price"] = json!("3.00");
    bad_order["currency"] = json!("usd");

    let cases: [(&str, Option<&str>, &Value); 4] = [
        (
            "Order Completed, valid (2 products)",
            Some("Order Completed"),
            &order,
        ),
        ("Product Viewed, valid", Some("Product Viewed"), &viewed),
        ("traits, valid", None, &traits),
        (
            "Order Completed, 2 errors",
            Some("Order Completed"),
            &bad_order,
        ),
    ];
    println!("{iterations} iterations per case, one thread");
    for (label, event, payload) in cases {
        let validate = || match event {
            Some(name) => registry.validate_event(name, payload),
            None => registry.validate_traits(payload),
        };
        // Warm up, and make sure the case is what its label says.
        let outcome = validate();
        let expect_valid = !label.contains("errors");
        assert_eq!(
            matches!(outcome, Validation::Valid { .. }),
            expect_valid,
            "{label}: {outcome:?}"
        );
        let started = Instant::now();
        for _ in 0..iterations {
            black_box(validate());
        }
        let nanos = started.elapsed().as_nanos() as f64 / f64::from(iterations);
        println!(
            "{label:<40} {nanos:>8.0} ns/event  ({:>9.0} events/s per core)",
            1e9 / nanos
        );
    }
    Ok(())
}
