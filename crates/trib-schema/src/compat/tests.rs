//! Compatibility checker tests: one case per rule, each incompatibility asserted by path and
//! reason, plus a randomized soundness check against the real validator.

use serde_json::{Value, json};

use super::*;

/// Asserts the result of `is_backward_compatible(old, new)`: `expect` lists
/// `(path, fragment of the reason)`; empty means compatible.
#[track_caller]
fn check(old: Value, new: Value, expect: &[(&str, &str)]) {
    let result = is_backward_compatible(&old, &new);
    let found = result.err().unwrap_or_default();
    for (path, fragment) in expect {
        assert!(
            found
                .iter()
                .any(|problem| problem.path == *path && problem.reason.contains(fragment)),
            "expected `{path}: …{fragment}…` in {found:#?}\nold: {old}\nnew: {new}"
        );
    }
    if expect.is_empty() {
        assert!(
            found.is_empty(),
            "expected compatible, got {found:#?}\nold: {old}\nnew: {new}"
        );
    }
}

#[track_caller]
fn compatible(old: Value, new: Value) {
    check(old, new, &[]);
}

#[test]
fn identical_and_annotation_only_changes_are_compatible() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    compatible(schema.clone(), schema);
    compatible(
        json!({"type": "string", "title": "old"}),
        json!({"type": "string", "title": "new", "description": "d", "examples": ["x"], "x-owner": "team"}),
    );
}

#[test]
fn type_may_widen_not_narrow() {
    compatible(json!({"type": "integer"}), json!({"type": "number"}));
    compatible(
        json!({"type": "string"}),
        json!({"type": ["string", "null"]}),
    );
    compatible(json!({"type": "string"}), json!({}));
    check(
        json!({"type": "number"}),
        json!({"type": "integer"}),
        &[("$", "`type` narrowed: non-integer number values")],
    );
    check(
        json!({"type": ["string", "null"]}),
        json!({"type": "string"}),
        &[("$", "`type` narrowed: null values")],
    );
    check(
        json!({}),
        json!({"type": "object"}),
        &[("$", "`type` narrowed")],
    );
}

#[test]
fn keywords_only_apply_to_the_types_old_accepted() {
    // A string field gains number bounds: no string is affected.
    compatible(
        json!({"type": "string"}),
        json!({"type": "string", "minimum": 5}),
    );
    // Without `type`, the same bound rejects numbers that were accepted.
    check(
        json!({}),
        json!({"minimum": 5}),
        &[("$", "`minimum`/`exclusiveMinimum` tightened")],
    );
}

#[test]
fn required_may_not_gain_names() {
    compatible(
        json!({"type": "object", "required": ["a", "b"]}),
        json!({"type": "object", "required": ["a"]}),
    );
    check(
        json!({"type": "object", "required": ["a"]}),
        json!({"type": "object", "required": ["a", "coupon"]}),
        &[("$.coupon", "property `coupon` became required")],
    );
}

#[test]
fn existing_properties_are_compared_recursively() {
    check(
        json!({"properties": {"price": {"type": "number"}}}),
        json!({"properties": {"price": {"type": "string"}}}),
        &[("$.price", "`type` narrowed: number values")],
    );
    check(
        json!({"properties": {"address": {"properties": {"city": {"type": "string"}}}}}),
        json!({"properties": {"address": {"properties": {"city": {"type": "string", "maxLength": 3}}}}}),
        &[("$.address.city", "`maxLength` 3 added")],
    );
}

#[test]
fn new_property_is_an_addition_only_when_old_was_closed() {
    let closed = json!({"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}});
    let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let with_coupon = |base: &Value| {
        let mut schema = base.clone();
        schema["properties"]["coupon"] = json!({"type": "string"});
        schema
    };
    compatible(closed.clone(), with_coupon(&closed));
    check(
        open.clone(),
        with_coupon(&open),
        &[(
            "$.coupon",
            "new property `coupon` may reject values the old schema accepted",
        )],
    );
    // A new property that accepts anything is fine even when old was open.
    let mut documented = open.clone();
    documented["properties"]["note"] = json!({"description": "free text"});
    compatible(open.clone(), documented);
    // Old `additionalProperties` as a schema: the new property must accept what it accepted.
    let strings_only = json!({"additionalProperties": {"type": "string"}});
    compatible(
        strings_only.clone(),
        json!({"additionalProperties": {"type": "string"}, "properties": {"coupon": {"type": ["string", "null"]}}}),
    );
    check(
        strings_only,
        json!({"additionalProperties": {"type": "string"}, "properties": {"coupon": {"type": "string", "maxLength": 3}}}),
        &[("$.coupon", "new property `coupon`")],
    );
}

#[test]
fn additional_properties_may_open_not_close() {
    compatible(
        json!({"additionalProperties": false}),
        json!({"additionalProperties": true}),
    );
    compatible(
        json!({"additionalProperties": false}),
        json!({"additionalProperties": {"type": "string"}}),
    );
    compatible(json!({"additionalProperties": false}), json!({}));
    check(
        json!({"properties": {"a": {}}}),
        json!({"properties": {"a": {}}, "additionalProperties": false}),
        &[("$.*", "`additionalProperties` became false")],
    );
    check(
        json!({"additionalProperties": {"type": ["string", "number"]}}),
        json!({"additionalProperties": {"type": "string"}}),
        &[("$.*", "`type` narrowed: number values")],
    );
    // Removing a listed property sends it to `additionalProperties`.
    check(
        json!({"properties": {"a": {"type": "string"}}, "additionalProperties": false}),
        json!({"properties": {}, "additionalProperties": false}),
        &[(
            "$.a",
            "property `a` was removed while `additionalProperties` is false",
        )],
    );
    compatible(
        json!({"properties": {"a": {"type": "string"}}, "additionalProperties": false}),
        json!({"properties": {}, "additionalProperties": {"type": "string"}}),
    );
}

#[test]
fn unevaluated_properties_without_applicators_acts_like_additional_properties() {
    compatible(
        json!({"properties": {"a": {}}, "unevaluatedProperties": false}),
        json!({"properties": {"a": {}, "b": {"type": "string"}}, "unevaluatedProperties": false}),
    );
    check(
        json!({"properties": {"a": {}}}),
        json!({"properties": {"a": {}}, "unevaluatedProperties": false}),
        &[("$.*", "`additionalProperties` became false")],
    );
    check(
        json!({"properties": {"a": {}}}),
        json!({"allOf": [{"properties": {"b": {}}}], "unevaluatedProperties": false}),
        &[("$", "cannot prove `unevaluatedProperties` compatible")],
    );
}

#[test]
fn enum_and_const_may_gain_values_not_lose_them() {
    compatible(
        json!({"enum": ["free", "plus"]}),
        json!({"enum": ["free", "plus", "pro"]}),
    );
    check(
        json!({"enum": ["free", "plus", "pro"]}),
        json!({"enum": ["free", "plus"]}),
        &[("$", "`enum` value \"pro\" was removed")],
    );
    check(
        json!({"const": "a"}),
        json!({"const": "b"}),
        &[("$", "`const` changed: \"a\"")],
    );
    compatible(json!({"const": "a"}), json!({"enum": ["a", "b"]}));
    check(
        json!({"type": "string"}),
        json!({"type": "string", "enum": ["a"]}),
        &[("$", "`enum` added")],
    );
    // Old values are checked against the whole new schema, exactly.
    compatible(
        json!({"enum": ["ab", "cd"]}),
        json!({"type": "string", "maxLength": 2}),
    );
    check(
        json!({"enum": ["ab", "cde"]}),
        json!({"type": "string", "maxLength": 2}),
        &[("$", "value \"cde\"")],
    );
    // A value the old schema itself rejected does not count.
    compatible(
        json!({"type": "string", "enum": ["a", 1]}),
        json!({"type": "string"}),
    );
    // Booleans have few values: an enum listing both accepts every old boolean.
    compatible(json!({"type": "boolean"}), json!({"enum": [true, false]}));
}

#[test]
fn number_bounds_may_loosen_not_tighten() {
    compatible(
        json!({"minimum": 1, "maximum": 10}),
        json!({"minimum": 0, "maximum": 20}),
    );
    compatible(json!({"minimum": 1}), json!({}));
    compatible(json!({"exclusiveMinimum": 0}), json!({"minimum": 0}));
    compatible(
        json!({"type": "integer", "exclusiveMinimum": 0}),
        json!({"type": "integer", "minimum": 1}),
    );
    compatible(
        json!({"type": "integer", "maximum": 9}),
        json!({"type": "integer", "exclusiveMaximum": 10}),
    );
    check(
        json!({"type": "number", "exclusiveMinimum": 0}),
        json!({"type": "number", "minimum": 1}),
        &[("$", "lower bound went from > 0 to ≥ 1")],
    );
    check(
        json!({"minimum": 0}),
        json!({"exclusiveMinimum": 0}),
        &[("$", "lower bound went from ≥ 0 to > 0")],
    );
    check(
        json!({"type": "number"}),
        json!({"type": "number", "maximum": 100}),
        &[("$", "upper bound went from none to ≤ 100")],
    );
    check(
        json!({"maximum": 100}),
        json!({"exclusiveMaximum": 50}),
        &[("$", "`maximum`/`exclusiveMaximum` tightened")],
    );
    compatible(json!({"multipleOf": 10}), json!({"multipleOf": 5}));
    compatible(
        json!({"type": "integer"}),
        json!({"type": "integer", "multipleOf": 1}),
    );
    check(
        json!({"multipleOf": 5}),
        json!({"multipleOf": 10}),
        &[("$", "`multipleOf` tightened from 5 to 10")],
    );
}

#[test]
fn string_constraints_may_loosen_not_tighten() {
    compatible(
        json!({"type": "string", "minLength": 2, "maxLength": 5}),
        json!({"type": "string", "minLength": 1, "maxLength": 10}),
    );
    compatible(
        json!({"type": "string", "pattern": "^a", "format": "email"}),
        json!({"type": "string"}),
    );
    check(
        json!({"type": "string", "minLength": 1}),
        json!({"type": "string", "minLength": 2}),
        &[("$", "`minLength` tightened from 1 to 2")],
    );
    check(
        json!({"type": "string", "maxLength": 10}),
        json!({"type": "string", "maxLength": 5}),
        &[("$", "`maxLength` tightened from 10 to 5")],
    );
    check(
        json!({"type": "string"}),
        json!({"type": "string", "pattern": "^[A-Z]{3}$"}),
        &[("$", "`pattern` \"^[A-Z]{3}$\" added")],
    );
    check(
        json!({"type": "string", "pattern": "^[A-Z]+$"}),
        json!({"type": "string", "pattern": "^[A-Za-z]+$"}),
        &[("$", "`pattern` changed")],
    );
    check(
        json!({"type": "string"}),
        json!({"type": "string", "format": "email"}),
        &[("$", "`format` \"email\" added")],
    );
}

#[test]
fn array_items_are_compared_recursively() {
    let products = |price: Value| json!({"properties": {"products": {"type": "array", "items": {"type": "object", "properties": {"price": price}}}}});
    compatible(
        products(json!({"type": "integer"})),
        products(json!({"type": "number"})),
    );
    check(
        products(json!({"type": "number"})),
        products(json!({"type": "number", "minimum": 0})),
        &[("$.products[*].price", "lower bound went from none to ≥ 0")],
    );
    check(
        json!({"prefixItems": [{"type": "string"}], "items": {"type": "number"}}),
        json!({"prefixItems": [{"type": "string"}, {"type": "integer"}]}),
        &[("$[1]", "`type` narrowed: non-integer number")],
    );
    compatible(
        json!({"type": "array", "maxItems": 3}),
        json!({"type": "array", "maxItems": 5}),
    );
    compatible(
        json!({"prefixItems": [{}, {}], "items": false}),
        json!({"maxItems": 2}),
    );
    check(
        json!({"type": "array"}),
        json!({"type": "array", "minItems": 1}),
        &[("$", "`minItems` tightened from 0 to 1")],
    );
    check(
        json!({"type": "array", "maxItems": 5}),
        json!({"type": "array", "maxItems": 3}),
        &[("$", "`maxItems` tightened from 5 to 3")],
    );
    check(
        json!({"type": "array"}),
        json!({"type": "array", "uniqueItems": true}),
        &[("$", "`uniqueItems` added")],
    );
}

#[test]
fn object_size_and_dependencies_may_loosen_not_tighten() {
    check(
        json!({"type": "object"}),
        json!({"type": "object", "maxProperties": 10}),
        &[("$", "`maxProperties` 10 added")],
    );
    check(
        json!({"type": "object"}),
        json!({"type": "object", "minProperties": 1}),
        &[("$", "`minProperties` tightened from 0 to 1")],
    );
    compatible(
        json!({"dependentRequired": {"a": ["b", "c"]}}),
        json!({"dependentRequired": {"a": ["b"]}}),
    );
    check(
        json!({}),
        json!({"dependentRequired": {"card": ["billing_address"]}}),
        &[(
            "$.card",
            "`dependentRequired` now requires `billing_address` whenever `card` is present",
        )],
    );
    check(
        json!({}),
        json!({"propertyNames": {"maxLength": 3}}),
        &[("$", "`propertyNames`: `maxLength` 3 added")],
    );
}

#[test]
fn pattern_properties_are_compared_pattern_by_pattern() {
    compatible(
        json!({"patternProperties": {"^x-": {"type": "string", "maxLength": 5}}}),
        json!({"patternProperties": {"^x-": {"type": "string"}}}),
    );
    check(
        json!({"patternProperties": {"^x-": {"type": "string"}}}),
        json!({"patternProperties": {"^x-": {"type": "string", "maxLength": 5}}}),
        &[("$[/^x-/]", "`maxLength` 5 added")],
    );
    check(
        json!({}),
        json!({"patternProperties": {"^x-": {"type": "string"}}}),
        &[("$[/^x-/]", "cannot prove `patternProperties` compatible")],
    );
    // A new pattern is harmless when old allowed no unlisted properties and the listed ones fit.
    compatible(
        json!({"properties": {"x-a": {"type": "string"}}, "additionalProperties": false}),
        json!({"properties": {"x-a": {"type": "string"}}, "additionalProperties": false, "patternProperties": {"^x-": {"type": "string"}}}),
    );
}

#[test]
fn any_of_may_gain_branches() {
    compatible(
        json!({"anyOf": [{"type": "string"}]}),
        json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
    );
    compatible(
        json!({"type": "string"}),
        json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
    );
    compatible(
        json!({"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer"}]}),
        json!({"anyOf": [{"type": "number"}, {"type": "string"}]}),
    );
    check(
        json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
        json!({"anyOf": [{"type": "string"}]}),
        &[("$", "cannot prove `anyOf` compatible")],
    );
}

#[test]
fn one_of_not_and_conditionals_must_stay_unchanged() {
    let one_of = json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
    compatible(one_of.clone(), one_of.clone());
    check(
        one_of,
        json!({"oneOf": [{"type": "string"}, {"type": "number"}]}),
        &[("$", "cannot prove `oneOf` compatible")],
    );
    check(
        json!({}),
        json!({"not": {"type": "null"}}),
        &[("$", "cannot prove `not` compatible")],
    );
    check(
        json!({}),
        json!({"if": {"required": ["a"]}, "then": {"required": ["b"]}}),
        &[("$", "cannot prove `if` compatible")],
    );
    check(
        json!({"type": "array"}),
        json!({"type": "array", "contains": {"type": "string"}}),
        &[("$", "cannot prove `contains` compatible")],
    );
}

#[test]
fn all_of_branches_are_each_proven() {
    compatible(
        json!({"allOf": [{"type": "object"}, {"required": ["a"]}]}),
        json!({"allOf": [{"type": "object"}]}),
    );
    check(
        json!({"type": "object"}),
        json!({"allOf": [{"type": "object"}, {"required": ["a"]}]}),
        &[("$.a", "property `a` became required")],
    );
}

#[test]
fn local_refs_are_followed() {
    let with_product = |product: Value| {
        json!({
            "properties": {"products": {"items": {"$ref": "#/$defs/product"}}},
            "$defs": {"product": product}
        })
    };
    compatible(
        with_product(json!({"properties": {"price": {"type": "integer"}}})),
        with_product(json!({"properties": {"price": {"type": "number"}}})),
    );
    check(
        with_product(json!({"properties": {"price": {"type": "number"}}})),
        with_product(json!({"properties": {"price": {"type": "number"}}, "required": ["price"]})),
        &[("$.products[*].price", "property `price` became required")],
    );
    // Inlining a definition is not a change.
    compatible(
        with_product(json!({"properties": {"price": {"type": "number"}}})),
        json!({"properties": {"products": {"items": {"properties": {"price": {"type": "number"}}}}}}),
    );
    check(
        json!({}),
        json!({"$ref": "https://example.com/other.json"}),
        &[(
            "$",
            "cannot prove `$ref` \"https://example.com/other.json\" compatible",
        )],
    );
}

#[test]
fn recursive_schemas_terminate() {
    let tree = |leaf: Value| {
        json!({
            "$ref": "#/$defs/node",
            "$defs": {"node": {"type": "object", "properties": {
                "value": leaf,
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
            }}}
        })
    };
    compatible(
        tree(json!({"type": "integer"})),
        tree(json!({"type": "number"})),
    );
    check(
        tree(json!({"type": "number"})),
        tree(json!({"type": "integer"})),
        &[("$.value", "`type` narrowed")],
    );
    // The nested occurrence is the same pair of definitions, proven (or not) once.
    assert_eq!(
        is_backward_compatible(
            &tree(json!({"type": "number"})),
            &tree(json!({"type": "integer"}))
        )
        .unwrap_err()
        .len(),
        1
    );
}

#[test]
fn boolean_schemas() {
    compatible(json!(false), json!({"type": "string"}));
    compatible(json!({"type": "string"}), json!(true));
    check(
        json!({"type": "string"}),
        json!(false),
        &[("$", "the new schema is `false` here")],
    );
    check(
        json!({"properties": {"a": true}}),
        json!({"properties": {"a": false}}),
        &[("$.a", "the new schema is `false` here")],
    );
}

#[test]
fn the_example_order_completed_addition_is_compatible() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/examples/schemas/events/order-completed");
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    compatible(read("1-0-0.json"), read("1-0-1.json"));
    // And the reverse (removing `coupon` while closed) is not.
    check(
        read("1-0-1.json"),
        read("1-0-0.json"),
        &[("$.coupon", "property `coupon` was removed")],
    );
}

/// Soundness, tested: whenever the checker says compatible, no sample value accepted by the
/// old schema may be rejected by the new one (judged by the real validator).
#[test]
fn compatible_verdicts_hold_on_sample_values() {
    let mut random = Lcg(0x5eed_1234_abcd_0001);
    let instances = sample_instances();
    let mut proven = 0;
    for _ in 0..3000 {
        let old = random_schema(&mut random, 2);
        let new = if random.below(3) == 0 {
            random_schema(&mut random, 2)
        } else {
            mutate(&mut random, &old, 2)
        };
        if is_backward_compatible(&old, &new).is_err() {
            continue;
        }
        proven += 1;
        let (Ok(old_validator), Ok(new_validator)) = (
            crate::document::compile(&old, "old"),
            crate::document::compile(&new, "new"),
        ) else {
            panic!("the generator made an invalid schema\nold: {old}\nnew: {new}");
        };
        for instance in &instances {
            assert!(
                !old_validator.is_valid(instance) || new_validator.is_valid(instance),
                "claimed compatible, but {instance} passes\nold: {old}\nand fails\nnew: {new}"
            );
        }
    }
    // The generator must exercise the positive verdict, or the test proves nothing.
    assert!(proven > 300, "only {proven} compatible pairs generated");
}

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }

    fn pick<'v, T>(&mut self, items: &'v [T]) -> &'v T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &["a", "b", "c"];

fn random_schema(random: &mut Lcg, depth: u32) -> Value {
    let mut schema = serde_json::Map::new();
    let types = [
        "string", "integer", "number", "object", "array", "null", "boolean",
    ];
    match random.below(4) {
        0 => {}
        1 => {
            schema.insert("type".into(), json!(random.pick(&types)));
        }
        _ => {
            let first = random.below(types.len() as u64) as usize;
            let second = (first + 1 + random.below(types.len() as u64 - 1) as usize) % types.len();
            schema.insert("type".into(), json!([types[first], types[second]]));
        }
    }
    for _ in 0..random.below(4) {
        let (keyword, value) = random_keyword(random, depth);
        schema.insert(keyword.into(), value);
    }
    Value::Object(schema)
}

fn random_keyword(random: &mut Lcg, depth: u32) -> (&'static str, Value) {
    let small = |random: &mut Lcg| json!(random.below(4));
    match random.below(if depth == 0 { 20 } else { 26 }) {
        0 => ("minimum", small(random)),
        1 => ("exclusiveMaximum", small(random)),
        2 => ("minLength", small(random)),
        3 => ("maxLength", small(random)),
        4 => (
            "enum",
            json!([
                random.pick(&[json!("a"), json!(1), json!(null)]),
                random.pick(&[json!("ab"), json!(2), json!(true)])
            ]),
        ),
        5 => ("required", json!([random.pick(NAMES)])),
        6 => ("additionalProperties", json!(random.below(2) == 0)),
        7 => ("maxItems", small(random)),
        8 => ("uniqueItems", json!(true)),
        9 => ("multipleOf", json!(random.pick(&[1, 2, 4]))),
        10 => ("pattern", json!(random.pick(&["^a", "b$"]))),
        11 => ("const", json!(random.pick(&[json!("a"), json!(1)]))),
        12 => ("exclusiveMinimum", small(random)),
        13 => ("maximum", small(random)),
        14 => ("minItems", small(random)),
        15 => ("minProperties", small(random)),
        16 => ("maxProperties", small(random)),
        17 => (
            "dependentRequired",
            json!({ *random.pick(NAMES): [random.pick(NAMES)] }),
        ),
        18 => ("format", json!(random.pick(&["email", "date"]))),
        19 => ("type", json!("integer")),
        20 | 21 => {
            let mut properties = serde_json::Map::new();
            for _ in 0..=random.below(2) {
                properties.insert(
                    (*random.pick(NAMES)).into(),
                    random_schema(random, depth - 1),
                );
            }
            ("properties", Value::Object(properties))
        }
        22 => ("items", random_schema(random, depth - 1)),
        23 => (
            "anyOf",
            json!([
                random_schema(random, depth - 1),
                random_schema(random, depth - 1)
            ]),
        ),
        24 => match random.below(4) {
            0 => ("allOf", json!([random_schema(random, depth - 1)])),
            1 => ("prefixItems", json!([random_schema(random, depth - 1)])),
            2 => (
                "patternProperties",
                json!({ *random.pick(&["^a", "^b"]): random_schema(random, depth - 1) }),
            ),
            _ => (
                "oneOf",
                json!([
                    random_schema(random, depth - 1),
                    random_schema(random, depth - 1)
                ]),
            ),
        },
        _ => ("additionalProperties", random_schema(random, depth - 1)),
    }
}

/// A small change: add, drop or replace one keyword, or recurse into `properties`.
fn mutate(random: &mut Lcg, schema: &Value, depth: u32) -> Value {
    let mut schema = schema.as_object().cloned().unwrap_or_default();
    match random.below(4) {
        0 => {
            let (keyword, value) = random_keyword(random, depth);
            schema.insert(keyword.into(), value);
        }
        1 => {
            if let Some(key) = schema
                .keys()
                .nth(random.below(schema.len().max(1) as u64) as usize)
                .cloned()
            {
                schema.remove(&key);
            }
        }
        2 if depth > 0 => {
            if let Some(Value::Object(properties)) = schema.get_mut("properties")
                && let Some(key) = properties.keys().next().cloned()
            {
                let inner = mutate(random, &properties[&key], depth - 1);
                properties.insert(key, inner);
            }
        }
        _ => {
            let types = [
                "string", "integer", "number", "object", "array", "null", "boolean",
            ];
            schema.insert("type".into(), json!(random.pick(&types)));
        }
    }
    Value::Object(schema)
}

fn sample_instances() -> Vec<Value> {
    let scalars = vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(1),
        json!(2),
        json!(3),
        json!(4),
        json!(-1),
        json!(1.5),
        json!(""),
        json!("a"),
        json!("ab"),
        json!("b"),
        json!("abcd"),
        json!("a@b.c"),
        json!("2024-01-31"),
    ];
    let mut instances = scalars.clone();
    instances.push(json!([]));
    instances.push(json!([1, 1]));
    instances.push(json!(["a", "b", "c", "d"]));
    instances.push(json!({}));
    for name in NAMES {
        for value in &scalars {
            instances.push(json!({ *name: value }));
        }
        instances.push(json!({ *name: {"a": 1} }));
        instances.push(json!({ *name: [1, 2] }));
    }
    instances.push(json!({"a": "a", "b": 1, "c": null}));
    instances.push(json!({"a": 1, "d": "x"}));
    instances.push(json!({"z": true}));
    instances.push(json!([{"a": 1}, {"b": "ab"}]));
    instances
}
