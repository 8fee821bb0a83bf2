//! Request bodies: realistic Segment batches built once, then patched in place per request.
//!
//! The server deduplicates by `messageId`, so every message of every request must carry a new
//! one, or the benchmark would measure the dedup path instead of ingestion. Serializing 100
//! messages per request would cost the load generator more CPU than the server spends parsing
//! them, so a small pool of batches is serialized once with placeholders, and a request copies
//! one of them and overwrites fixed-width digit slots: the request sequence number in each
//! `messageId` (whose suffix is the message's position in the batch), and the user number in
//! each `userId` and e-mail address.

use serde_json::{Value, json};

/// Digits of the request sequence number in a `messageId`.
pub(crate) const SEQ_DIGITS: usize = 12;
/// Digits of the user number in a `userId` and an e-mail address.
pub(crate) const USER_DIGITS: usize = 6;
/// The largest `--users`.
pub(crate) const MAX_USERS: u32 = 1_000_000;
/// The largest `--batch-size` (the position in the batch has four digits).
pub(crate) const MAX_BATCH: usize = 9_999;

const SEQ_PLACEHOLDER: &str = "############";
const USER_PLACEHOLDER: &str = "$$$$$$";
const _: () = assert!(SEQ_PLACEHOLDER.len() == SEQ_DIGITS && USER_PLACEHOLDER.len() == USER_DIGITS);

/// What to build.
#[derive(Debug, Clone)]
pub(crate) struct PayloadConfig {
    pub(crate) batch_size: usize,
    /// How many different batches to serialize; requests cycle through them.
    pub(crate) templates: usize,
    /// User numbers are spread over `0..users`.
    pub(crate) users: u32,
    /// Makes message ids unique across runs against the same data directory.
    pub(crate) run_id: String,
    /// Seed of the generated content.
    pub(crate) seed: u64,
}

/// The pre-serialized batches.
#[derive(Debug)]
pub(crate) struct Pool {
    templates: Vec<Template>,
    users: u64,
}

#[derive(Debug)]
struct Template {
    bytes: Vec<u8>,
    messages: Vec<Slots>,
}

/// Where a message's patchable digits are, as offsets into the batch.
#[derive(Debug)]
struct Slots {
    message_id: usize,
    users: Vec<usize>,
}

impl Pool {
    pub(crate) fn build(config: &PayloadConfig) -> Self {
        let now = jiff::Timestamp::now();
        let sent_at = now.round(jiff::Unit::Millisecond).unwrap_or(now);
        let templates = (0..config.templates.max(1))
            .map(|index| {
                let mut generator =
                    Generator::new(config.seed ^ splitmix64(index as u64 + 1), sent_at);
                build_template(&mut generator, config)
            })
            .collect();
        Self {
            templates,
            users: u64::from(config.users.clamp(1, MAX_USERS)),
        }
    }

    /// The size of the largest body.
    pub(crate) fn max_body_len(&self) -> usize {
        self.templates
            .iter()
            .map(|template| template.bytes.len())
            .max()
            .unwrap_or(0)
    }

    /// The mean size of a message, commas included.
    pub(crate) fn mean_message_len(&self) -> usize {
        let bytes: usize = self
            .templates
            .iter()
            .map(|template| template.bytes.len())
            .sum();
        let messages: usize = self
            .templates
            .iter()
            .map(|template| template.messages.len())
            .sum();
        bytes / messages.max(1)
    }

    /// Writes the body of request number `seq` into `out`, replacing what it held.
    pub(crate) fn render_into(&self, seq: u64, out: &mut Vec<u8>) {
        let template = &self.templates[(seq % self.templates.len() as u64) as usize];
        out.clear();
        out.extend_from_slice(&template.bytes);
        let mut seq_digits = [0u8; SEQ_DIGITS];
        write_digits(&mut seq_digits, seq);
        for (position, slots) in template.messages.iter().enumerate() {
            out[slots.message_id..slots.message_id + SEQ_DIGITS].copy_from_slice(&seq_digits);
            if !slots.users.is_empty() {
                let mut user_digits = [0u8; USER_DIGITS];
                write_digits(&mut user_digits, user_of(seq, position as u64, self.users));
                for &at in &slots.users {
                    out[at..at + USER_DIGITS].copy_from_slice(&user_digits);
                }
            }
        }
    }

    /// The body of request number `seq`.
    pub(crate) fn render(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(seq, &mut out);
        out
    }
}

/// Which of `users` people sent message `position` of request `seq`: uniform, and stable for a
/// given request, so a resent request names the same people.
fn user_of(seq: u64, position: u64, users: u64) -> u64 {
    splitmix64(seq.wrapping_mul(0x1_0000).wrapping_add(position)) % users
}

/// Writes the low decimal digits of `value` into `out`, zero-padded.
fn write_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn build_template(generator: &mut Generator, config: &PayloadConfig) -> Template {
    let mut bytes = Vec::with_capacity(config.batch_size * 700 + 64);
    bytes.extend_from_slice(b"{\"batch\":[");
    let mut messages = Vec::with_capacity(config.batch_size);
    for position in 0..config.batch_size {
        if position > 0 {
            bytes.push(b',');
        }
        let message_id = format!("lg-{}-{SEQ_PLACEHOLDER}-{position:04}", config.run_id);
        let message = generator.message(&message_id);
        let start = bytes.len();
        // A `Value` always serializes.
        serde_json::to_writer(&mut bytes, &message).unwrap_or_default();
        let serialized = &bytes[start..];
        let message_id = find_all(serialized, SEQ_PLACEHOLDER.as_bytes());
        debug_assert_eq!(message_id.len(), 1, "one messageId per message");
        messages.push(Slots {
            message_id: start + message_id.first().copied().unwrap_or(0),
            users: find_all(serialized, USER_PLACEHOLDER.as_bytes())
                .into_iter()
                .map(|at| start + at)
                .collect(),
        });
    }
    bytes.extend_from_slice(b"],\"sentAt\":\"");
    bytes.extend_from_slice(generator.sent_at.to_string().as_bytes());
    bytes.extend_from_slice(b"\"}");
    // The placeholders must not stay in a request even if one is never patched.
    for slots in &messages {
        bytes[slots.message_id..slots.message_id + SEQ_DIGITS].fill(b'0');
        for &at in &slots.users {
            bytes[at..at + USER_DIGITS].fill(b'0');
        }
    }
    Template { bytes, messages }
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        if &haystack[at..at + needle.len()] == needle {
            found.push(at);
            at += needle.len();
        } else {
            at += 1;
        }
    }
    found
}

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

struct Product {
    id: &'static str,
    sku: &'static str,
    name: &'static str,
    slug: &'static str,
    category: &'static str,
    brand: &'static str,
    price: f64,
}

const PRODUCTS: &[Product] = &[
    Product {
        id: "p-1001",
        sku: "NW-TR2-42",
        name: "Trail Runner 2",
        slug: "trail-runner-2",
        category: "Shoes",
        brand: "Northwind",
        price: 89.95,
    },
    Product {
        id: "p-1002",
        sku: "NW-CL-38",
        name: "City Loafer",
        slug: "city-loafer",
        category: "Shoes",
        brand: "Northwind",
        price: 74.5,
    },
    Product {
        id: "p-1017",
        sku: "AL-PK-M",
        name: "Alpine Rain Jacket",
        slug: "alpine-rain-jacket",
        category: "Outerwear",
        brand: "Alpenlicht",
        price: 149.0,
    },
    Product {
        id: "p-1023",
        sku: "AL-FL-L",
        name: "Fleece Pullover",
        slug: "fleece-pullover",
        category: "Outerwear",
        brand: "Alpenlicht",
        price: 59.9,
    },
    Product {
        id: "p-1040",
        sku: "HB-TOTE-NAT",
        name: "Canvas Tote",
        slug: "canvas-tote",
        category: "Accessories",
        brand: "Harbour",
        price: 24.0,
    },
    Product {
        id: "p-1041",
        sku: "HB-CAP-NVY",
        name: "Wool Cap",
        slug: "wool-cap",
        category: "Accessories",
        brand: "Harbour",
        price: 19.5,
    },
    Product {
        id: "p-1055",
        sku: "KS-MUG-350",
        name: "Stoneware Mug",
        slug: "stoneware-mug",
        category: "Home",
        brand: "Kiln & Salt",
        price: 14.9,
    },
    Product {
        id: "p-1056",
        sku: "KS-BWL-SET",
        name: "Bowl Set of 4",
        slug: "bowl-set-of-4",
        category: "Home",
        brand: "Kiln & Salt",
        price: 39.0,
    },
    Product {
        id: "p-1070",
        sku: "LT-RB-110",
        name: "Rain Boots Kids",
        slug: "rain-boots-kids",
        category: "Kids",
        brand: "Little Trek",
        price: 34.95,
    },
    Product {
        id: "p-1088",
        sku: "NW-SK-3P",
        name: "Merino Socks 3-Pack",
        slug: "merino-socks-3-pack",
        category: "Accessories",
        brand: "Northwind",
        price: 22.0,
    },
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Bruno", "Chloé", "Dmitri", "Elif", "Femi", "Greta", "Hiro", "Inès", "Jonas", "Kavya",
    "Luca",
];
const LAST_NAMES: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "García",
    "Nakamura",
    "Dubois",
    "Kowalski",
    "Rossi",
    "Schmidt",
    "Patel",
    "Moreau",
];
const PLANS: &[&str] = &["free", "member", "gold", "platinum"];
const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://www.instagram.com/",
    "",
    "https://newsletter.example.com/",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
];
const LOCALES: &[&str] = &["en-GB", "de-DE", "fr-FR", "en-US", "nl-NL"];
const SCREENS: &[&str] = &[
    "Home",
    "Product Detail",
    "Cart",
    "Search Results",
    "Order History",
];
const DEVICES: &[(&str, &str, &str)] = &[
    ("Apple", "iPhone15,2", "ios"),
    ("samsung", "SM-S911B", "android"),
    ("Google", "Pixel 8", "android"),
];
const SHOP: &str = "https://shop.example.com";

/// Generates messages with a deterministic mix: 34% Product Viewed, 8% Product Added, 5% Order
/// Completed, 33% page, 8% identify, 12% screen.
struct Generator {
    state: u64,
    sent_at: jiff::Timestamp,
}

impl Generator {
    fn new(seed: u64, sent_at: jiff::Timestamp) -> Self {
        Self {
            state: seed,
            sent_at,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(1);
        splitmix64(self.state)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn product(&mut self) -> &'static Product {
        &PRODUCTS[self.below(PRODUCTS.len())]
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// A time in the minute before the batch was sent, with milliseconds.
    fn timestamp(&mut self) -> String {
        let back = jiff::SignedDuration::from_millis(self.below(60_000) as i64 + 1);
        self.sent_at
            .checked_sub(back)
            .unwrap_or(self.sent_at)
            .round(jiff::Unit::Millisecond)
            .unwrap_or(self.sent_at)
            .to_string()
    }

    fn web_context(&mut self, path: &str, title: &str) -> Value {
        json!({
            "library": {"name": "analytics.js", "version": "5.2.1"},
            "ip": format!("203.0.113.{}", self.below(254) + 1),
            "locale": self.pick(LOCALES),
            "userAgent": self.pick(USER_AGENTS),
            "page": {
                "path": path,
                "url": format!("{SHOP}{path}"),
                "title": title,
                "referrer": self.pick(REFERRERS),
            },
        })
    }

    fn message(&mut self, message_id: &str) -> Value {
        let user_id = format!("user-{USER_PLACEHOLDER}");
        let timestamp = self.timestamp();
        let roll = self.below(100);
        let mut message = if roll < 34 {
            let product = self.product();
            let path = format!("/products/{}", product.slug);
            json!({
                "type": "track",
                "event": "Product Viewed",
                "anonymousId": self.uuid(),
                "properties": {
                    "product_id": product.id,
                    "sku": product.sku,
                    "name": product.name,
                    "category": product.category,
                    "brand": product.brand,
                    "price": product.price,
                    "currency": "EUR",
                    "position": self.below(24) + 1,
                },
                "context": self.web_context(&path, &format!("{} | {}", product.name, product.category)),
            })
        } else if roll < 42 {
            let product = self.product();
            let path = format!("/products/{}", product.slug);
            json!({
                "type": "track",
                "event": "Product Added",
                "anonymousId": self.uuid(),
                "properties": {
                    "cart_id": format!("c-{:08x}", self.next() as u32),
                    "product_id": product.id,
                    "sku": product.sku,
                    "name": product.name,
                    "price": product.price,
                    "quantity": self.below(2) + 1,
                },
                "context": self.web_context(&path, product.name),
            })
        } else if roll < 47 {
            let count = self.below(3) + 1;
            let mut products = Vec::with_capacity(count);
            let mut revenue = 0.0;
            for _ in 0..count {
                let product = self.product();
                let quantity = self.below(2) + 1;
                revenue += product.price * quantity as f64;
                products.push(json!({
                    "product_id": product.id,
                    "sku": product.sku,
                    "name": product.name,
                    "price": product.price,
                    "quantity": quantity,
                }));
            }
            let revenue = (revenue * 100.0).round() / 100.0;
            let shipping = if revenue > 50.0 { 0.0 } else { 4.95 };
            json!({
                "type": "track",
                "event": "Order Completed",
                "properties": {
                    "order_id": format!("o-{:010}", self.next() % 10_000_000_000),
                    "revenue": revenue,
                    "total": revenue + shipping,
                    "shipping": shipping,
                    "tax": ((revenue * 0.19 / 1.19) * 100.0).round() / 100.0,
                    "currency": "EUR",
                    "products": products,
                },
                "context": {
                    "library": {"name": "analytics-node", "version": "2.1.0"},
                    "ip": format!("198.51.100.{}", self.below(254) + 1),
                },
            })
        } else if roll < 80 {
            let (path, title, category) = match self.below(4) {
                0 => ("/".to_owned(), "Northwind Shop".to_owned(), "Home"),
                1 => {
                    let product = self.product();
                    (
                        format!("/products/{}", product.slug),
                        product.name.to_owned(),
                        "Product",
                    )
                }
                2 => {
                    let category = self.product().category;
                    (
                        format!("/c/{}", category.to_lowercase()),
                        category.to_owned(),
                        "Category",
                    )
                }
                _ => ("/cart".to_owned(), "Your cart".to_owned(), "Checkout"),
            };
            let context = self.web_context(&path, &title);
            json!({
                "type": "page",
                "name": title,
                "category": category,
                "anonymousId": self.uuid(),
                "properties": {"path": path, "url": format!("{SHOP}{path}"), "title": title},
                "context": context,
            })
        } else if roll < 88 {
            let first = self.pick(FIRST_NAMES);
            let last = self.pick(LAST_NAMES);
            let email = format!("{}.{USER_PLACEHOLDER}@example.com", first.to_lowercase());
            json!({
                "type": "identify",
                "traits": {
                    "email": email,
                    "firstName": first,
                    "lastName": last,
                    "plan": self.pick(PLANS),
                    "newsletter": self.below(2) == 0,
                    "createdAt": "2023-11-04T09:12:44.000Z",
                },
                "context": {
                    "library": {"name": "analytics.js", "version": "5.2.1"},
                    "ip": format!("203.0.113.{}", self.below(254) + 1),
                    "locale": self.pick(LOCALES),
                },
            })
        } else {
            let (manufacturer, model, os) = self.pick(DEVICES);
            let screen = self.pick(SCREENS);
            json!({
                "type": "screen",
                "name": screen,
                "properties": {"from": self.pick(SCREENS)},
                "context": {
                    "library": {"name": if os == "ios" { "analytics-ios" } else { "analytics-android" }, "version": "4.1.8"},
                    "app": {"name": "Northwind", "version": "3.14.0", "build": "3140", "namespace": "com.example.northwind"},
                    "device": {"id": self.uuid(), "manufacturer": manufacturer, "model": model, "type": os},
                    "os": {"name": if os == "ios" { "iOS" } else { "Android" }, "version": if os == "ios" { "17.4" } else { "14" }},
                    "network": {"wifi": self.below(2) == 0},
                    "locale": self.pick(LOCALES),
                },
            })
        };
        if let Some(object) = message.as_object_mut() {
            object.insert("messageId".to_owned(), Value::from(message_id));
            object.insert("userId".to_owned(), Value::from(user_id));
            object.insert("timestamp".to_owned(), Value::from(timestamp));
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn pool(batch_size: usize) -> Pool {
        Pool::build(&PayloadConfig {
            batch_size,
            templates: 16,
            users: 100_000,
            run_id: "0123abcd".to_owned(),
            seed: 7,
        })
    }

    fn messages(body: &[u8]) -> Vec<Value> {
        let value: Value = serde_json::from_slice(body).expect("valid JSON");
        value["batch"].as_array().expect("a batch array").clone()
    }

    #[test]
    fn a_batch_is_valid_json_with_the_requested_size() {
        let pool = pool(100);
        let body = pool.render(42);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            value["sentAt"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        let batch = value["batch"].as_array().unwrap();
        assert_eq!(batch.len(), 100);
        for message in batch {
            assert!(
                message["timestamp"]
                    .as_str()
                    .unwrap()
                    .parse::<jiff::Timestamp>()
                    .is_ok()
            );
            assert!(message["context"]["library"]["name"].is_string());
            assert!(message["userId"].as_str().unwrap().starts_with("user-"));
            assert!(
                !message.to_string().contains(['#', '$']),
                "placeholder left: {message}"
            );
        }
    }

    #[test]
    fn message_ids_are_unique_across_10k_requests() {
        let pool = pool(20);
        let mut ids = HashSet::new();
        let mut buffer = Vec::new();
        for seq in 0..10_000 {
            pool.render_into(seq, &mut buffer);
            for message in messages(&buffer) {
                let id = message["messageId"].as_str().unwrap().to_owned();
                assert!(
                    ids.insert(id.clone()),
                    "duplicate messageId {id} in request {seq}"
                );
            }
        }
        assert_eq!(ids.len(), 200_000);
    }

    #[test]
    fn sizes_stay_within_segment_limits_and_look_like_real_traffic() {
        let pool = pool(100);
        let mut sizes = Vec::new();
        for seq in 0..16 {
            let body = pool.render(seq);
            assert!(body.len() <= 500 * 1024, "batch of {} bytes", body.len());
            for message in messages(&body) {
                let size = serde_json::to_vec(&message).unwrap().len();
                assert!(size <= 32 * 1024, "message of {size} bytes");
                assert!(
                    (350..=1_100).contains(&size),
                    "message of {size} bytes: {message}"
                );
                sizes.push(size);
            }
        }
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((500..=800).contains(&mean), "mean message size {mean}");
    }

    #[test]
    fn the_mix_covers_the_shop_event_types() {
        let pool = pool(100);
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for seq in 0..16 {
            for message in messages(&pool.render(seq)) {
                let kind = match message["event"].as_str() {
                    Some(event) => event.to_owned(),
                    None => message["type"].as_str().unwrap().to_owned(),
                };
                *kinds.entry(kind).or_default() += 1;
            }
        }
        for kind in [
            "Product Viewed",
            "Product Added",
            "Order Completed",
            "page",
            "identify",
            "screen",
        ] {
            assert!(
                kinds.get(kind).copied().unwrap_or(0) > 10,
                "{kind}: {kinds:?}"
            );
        }
        let order = messages(&pool.render(0))
            .into_iter()
            .chain((1..16).flat_map(|seq| messages(&pool.render(seq))))
            .find(|message| message["event"] == "Order Completed")
            .unwrap();
        assert!(order["properties"]["revenue"].as_f64().unwrap() > 0.0);
        assert!(
            !order["properties"]["products"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn users_are_spread_and_consistent_within_a_message() {
        let pool = pool(100);
        let mut users = HashSet::new();
        for seq in 0..2_000 {
            for message in messages(&pool.render(seq)) {
                let user = message["userId"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("user-")
                    .to_owned();
                assert_eq!(user.len(), USER_DIGITS);
                if let Some(email) = message["traits"]["email"].as_str() {
                    assert!(email.contains(&format!(".{user}@")), "{email} vs {user}");
                }
                users.insert(user);
            }
        }
        // 200k draws over 100k people cover about 1 - e^-2 of them.
        assert!(users.len() > 80_000, "{} distinct users", users.len());
    }

    #[test]
    fn rendering_is_repeatable() {
        let pool = pool(10);
        assert_eq!(pool.render(5), pool.render(5));
        assert_ne!(pool.render(5), pool.render(5 + 16));
    }
}
