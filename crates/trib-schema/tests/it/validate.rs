//! Validation against the example schemas: outcomes, error paths, masking, NoSchema.

use serde_json::{Value, json};
use trib_schema::{FieldError, MAX_ERRORS, Registry, Subject, Validation};

use crate::{examples, order_completed, version};

fn order() -> Value {
    json!({
        "order_id": "50314b8e9bcf000000000000",
        "total": 27.5,
        "currency": "USD",
        "coupon": "hasbros",
        "products": [
            {"product_id": "507f1f77bcf86cd799439011", "price": 19.0, "quantity": 1, "name": "Monopoly"},
            {"product_id": "505bd76785ebb509fc183733", "price": 8.5, "quantity": 2, "url": "https://shop.example/uno"}
        ]
    })
}

/// Returns `(path, keyword)` of each error, asserting the outcome is Invalid against `expected_id`.
#[track_caller]
fn invalid(validation: &Validation<'_>, expected_id: &str) -> Vec<(String, String)> {
    match validation {
        Validation::Invalid { schema, errors, .. } => {
            assert_eq!(schema.to_string(), expected_id);
            errors
                .iter()
                .map(|error| (error.path.clone(), error.keyword.clone()))
                .collect()
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_conforming_event_is_valid_against_the_latest_version() {
    let registry = examples();
    let validation = registry.validate(&order_completed(), &order());
    assert!(validation.is_valid(), "{validation:?}");
    assert_eq!(
        validation.schema().unwrap().to_string(),
        "Order Completed/1-0-1"
    );
    assert_eq!(
        registry.validate_event("Order Completed", &order()),
        validation
    );
}

#[test]
fn errors_have_paths_relative_to_the_event() {
    let registry = examples();
    let mut event = order();
    event["products"][1]["price"] = json!("8.50");
    event["products"][0]["quantity"] = json!(0);
    event["currency"] = json!("usd");
    event.as_object_mut().unwrap().remove("order_id");
    event["gift_wrap"] = json!(true);
    let validation = registry.validate_event("Order Completed", &event);
    let mut found = invalid(&validation, "Order Completed/1-0-1");
    found.sort();
    let expected: Vec<(String, String)> = [
        ("properties.currency", "pattern"),
        ("properties.gift_wrap", "additionalProperties"),
        ("properties.order_id", "required"),
        ("properties.products[0].quantity", "minimum"),
        ("properties.products[1].price", "type"),
    ]
    .iter()
    .map(|(path, keyword)| ((*path).to_owned(), (*keyword).to_owned()))
    .collect();
    assert_eq!(found, expected);
    let messages: Vec<&FieldError> = validation.errors().iter().collect();
    let price = messages
        .iter()
        .find(|error| error.path == "properties.products[1].price")
        .unwrap();
    assert_eq!(price.message, "value is not of type \"number\"");
    let order_id = messages
        .iter()
        .find(|error| error.path == "properties.order_id")
        .unwrap();
    assert_eq!(order_id.message, "required property is missing");
}

#[test]
fn an_older_version_can_be_used_explicitly() {
    let registry = examples();
    let first = registry
        .get(&order_completed(), Some(&version("1-0-0")))
        .unwrap();
    // `coupon` did not exist in the closed 1-0-0.
    let validation = first.validate(&order());
    assert_eq!(
        invalid(&validation, "Order Completed/1-0-0"),
        [(
            "properties.coupon".to_owned(),
            "additionalProperties".to_owned()
        )]
    );
}

#[test]
fn traits_are_validated_with_formats_and_masked_values() {
    let registry = examples();
    let good = json!({
        "email": "peter@example.com",
        "firstName": "Peter",
        "plan": "pro",
        "createdAt": "2024-05-01T12:00:00Z",
        "address": {"city": "San Francisco", "country": "US"},
        "company": "Initech"
    });
    let validation = registry.validate_traits(&good);
    assert!(validation.is_valid(), "{validation:?}");
    assert_eq!(validation.schema().unwrap().to_string(), "traits/1-0-0");

    let bad = json!({
        "email": "peter.at.example.com",
        "plan": "enterprise",
        "createdAt": "yesterday",
        "address": {"country": "USA", "zip": "94103"}
    });
    let validation = registry.validate(&Subject::Traits, &bad);
    let mut found = invalid(&validation, "traits/1-0-0");
    found.sort();
    assert_eq!(
        found,
        [
            ("traits.address.country".to_owned(), "pattern".to_owned()),
            (
                "traits.address.zip".to_owned(),
                "additionalProperties".to_owned()
            ),
            ("traits.createdAt".to_owned(), "format".to_owned()),
            ("traits.email".to_owned(), "format".to_owned()),
            ("traits.plan".to_owned(), "enum".to_owned()),
        ]
    );
    for error in validation.errors() {
        for secret in ["peter.at.example.com", "enterprise", "yesterday", "USA"] {
            assert!(!error.message.contains(secret), "{error:?} leaks {secret}");
        }
    }
    let email = validation
        .errors()
        .iter()
        .find(|error| error.path == "traits.email")
        .unwrap();
    assert_eq!(email.message, "value is not a \"email\"");
}

#[test]
fn a_subject_without_schema_gives_no_schema() {
    let registry = examples();
    let validation = registry.validate_event("Signed Up", &json!({"anything": 1}));
    assert_eq!(validation, Validation::NoSchema);
    assert!(!validation.is_valid());
    assert!(validation.schema().is_none());
    assert_eq!(
        Registry::empty().validate(&Subject::Traits, &json!({})),
        Validation::NoSchema
    );
    // Event names are exact: no case folding.
    assert_eq!(
        registry.validate_event("order completed", &order()),
        Validation::NoSchema
    );
}

#[test]
fn error_lists_are_capped() {
    let registry = examples();
    let mut event = order();
    let products: Vec<Value> = (0..200)
        .map(|_| json!({"product_id": "p", "price": "free", "quantity": 1}))
        .collect();
    event["products"] = Value::Array(products);
    match registry.validate_event("Order Completed", &event) {
        Validation::Invalid {
            errors, truncated, ..
        } => {
            assert_eq!(errors.len(), MAX_ERRORS);
            assert!(truncated);
            assert_eq!(errors[0].path, "properties.products[0].price");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn outcomes_serialize_for_the_api() {
    let registry = examples();
    let validation = registry.validate_event("Product Viewed", &json!({"price": -1}));
    let serialized = serde_json::to_value(&validation).unwrap();
    assert_eq!(serialized["outcome"], "invalid");
    assert_eq!(
        serialized["schema"],
        json!({"subject": {"kind": "event", "name": "Product Viewed"}, "version": "1-0-0"})
    );
    assert_eq!(serialized["errors"].as_array().unwrap().len(), 2);
    assert_eq!(serialized["truncated"], false);
}
