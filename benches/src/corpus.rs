//! A fixed, deterministic corpus of Segment-spec messages (about 500 bytes each, some carrying PII)
//! shared by the criterion benches and the load generator, so both measure the same events.
//!
//! The mix follows what a web shop's analytics.js sends: mostly `track` calls (product views, cart
//! and checkout steps, searches), then `page`, `identify` (traits with an email: PII by nature),
//! `screen` and `group`. About one event in eight carries personal data in a free-text property
//! (an email, a phone number, a card number, a token in a URL). Everything comes from a seeded
//! xorshift generator: the same seed gives byte-identical events on every machine.

use serde_json::{json, Map, Value};

/// The seed used by the benches and the load generator unless told otherwise.
pub const DEFAULT_SEED: u64 = 0x5eed_5317_c4a7_0001;

/// The client timestamps of the corpus (the batch `sentAt` is [`SENT_AT`]).
const BASE_TIME: &str = "2024-05-01T12:00:";
/// The batch-level `sentAt` of bodies built by [`batch_body`].
pub const SENT_AT: &str = "2024-05-01T12:00:59.500Z";

/// xorshift64*: plenty for picking corpus shapes, fully deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn hex(&mut self, chars: usize) -> String {
        let mut out = String::with_capacity(chars);
        while out.len() < chars {
            out.push_str(&format!("{:016x}", self.next_u64()));
        }
        out.truncate(chars);
        out
    }

    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }
}

const PRODUCTS: [(&str, &str, f64); 8] = [
    ("Trail Running Shoe", "Footwear", 129.0),
    ("Merino Base Layer", "Apparel", 79.5),
    ("Ultralight Tent 2P", "Camping", 449.0),
    ("Insulated Bottle 750ml", "Accessories", 34.95),
    ("Down Jacket", "Apparel", 289.0),
    ("Headlamp 400lm", "Accessories", 49.9),
    ("Rain Shell", "Apparel", 199.0),
    ("Sleeping Pad", "Camping", 119.0),
];

const PATHS: [&str; 8] = [
    "/",
    "/products/trail-running-shoe",
    "/collections/apparel",
    "/cart",
    "/checkout/shipping",
    "/search",
    "/account/orders",
    "/blog/how-to-layer-for-winter",
];

const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
];

const LOCALES: [&str; 5] = ["en-US", "de-DE", "fr-FR", "en-GB", "ja-JP"];

const SEARCHES: [&str; 5] = [
    "waterproof boots",
    "tent 2 person",
    "merino socks size 42",
    "gift card",
    "headlamp usb-c",
];

/// Free-text values with personal data, as clients really send them by mistake.
const PII_NOTES: [&str; 6] = [
    "please call me at +1 415 555 0134 before delivery",
    "invoice to jane.doe@example.com please",
    "card 4111 1111 1111 1111 exp 12/27",
    "leave at door, questions: (212) 555-0199",
    "https://shop.example.com/reset?token=sk_live_51HxQabcdEFGH12345678&utm_source=mail",
    "my ssn is 123-45-6789 for the warranty form",
];

fn context(rng: &mut Rng, path: &str) -> Value {
    let mut context = json!({
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {"path": path},
        "locale": rng.pick(&LOCALES),
    });
    // Half the clients put the user agent in the context (the others only send the header).
    if rng.below(2) == 0 {
        context["userAgent"] = json!(rng.pick(&USER_AGENTS));
    }
    context
}

/// One Segment-spec message (a JSON object), the `index`-th of the corpus for `rng`'s seed.
fn message(rng: &mut Rng, index: usize) -> Value {
    let roll = rng.below(100);
    let anonymous_id = rng.uuid();
    let user_id = (rng.below(10) < 6).then(|| format!("user-{}", rng.below(50_000)));
    let path = *rng.pick(&PATHS);
    let (name, category, price) = *rng.pick(&PRODUCTS);
    let second = index % 59;
    let millis = rng.below(1000);
    let mut message = Map::new();
    message.insert("messageId".into(), Value::String(rng.uuid()));
    message.insert("anonymousId".into(), Value::String(anonymous_id));
    if let Some(user_id) = &user_id {
        message.insert("userId".into(), Value::String(user_id.clone()));
    }
    message.insert(
        "timestamp".into(),
        Value::String(format!("{BASE_TIME}{second:02}.{millis:03}Z")),
    );
    let mut context = context(rng, path);
    let with_pii = rng.below(8) == 0;
    match roll {
        0..=69 => {
            message.insert("type".into(), json!("track"));
            let (event, mut properties) = match rng.below(5) {
                0 => (
                    "Product Viewed",
                    json!({"product_id": format!("sku-{}", rng.below(9000) + 1000),
                           "name": name, "category": category, "price": price, "currency": "USD"}),
                ),
                1 => (
                    "Product Added",
                    json!({"product_id": format!("sku-{}", rng.below(9000) + 1000),
                           "name": name, "price": price, "quantity": rng.below(3) + 1,
                           "cart_id": rng.hex(12)}),
                ),
                2 => (
                    "Checkout Step Completed",
                    json!({"checkout_id": rng.hex(16), "step": rng.below(4) + 1,
                           "shipping_method": "ground", "payment_method": "card"}),
                ),
                3 => (
                    "Order Completed",
                    json!({"order_id": format!("{}", 100_000 + rng.below(900_000)),
                           "total": price * 1.08, "revenue": price, "tax": price * 0.08,
                           "currency": "USD", "coupon": "SPRING24",
                           "products": [{"product_id": "sku-1042", "quantity": 1, "price": price}]}),
                ),
                _ => (
                    "Products Searched",
                    json!({"query": rng.pick(&SEARCHES), "results": rng.below(120)}),
                ),
            };
            if with_pii {
                properties["note"] = json!(rng.pick(&PII_NOTES));
            }
            message.insert("event".into(), json!(event));
            message.insert("properties".into(), properties);
        }
        70..=84 => {
            message.insert("type".into(), json!("page"));
            message.insert("name".into(), json!("Catalog"));
            let mut properties = json!({"path": path, "title": "Summit Outfitters",
                "url": format!("https://shop.example.com{path}"), "referrer": "https://www.google.com/",
                "search": "?utm_source=newsletter&utm_medium=email"});
            if with_pii {
                properties["search"] = json!("?email=jane.doe%40example.com&utm_source=mail");
            }
            message.insert("properties".into(), properties);
        }
        85..=92 => {
            message.insert("type".into(), json!("identify"));
            if user_id.is_none() {
                message.insert(
                    "userId".into(),
                    json!(format!("user-{}", rng.below(50_000))),
                );
            }
            // Identify traits carry an email by nature: every identify call has PII.
            let first = *rng.pick(&["jane", "li", "omar", "sofia", "ken"]);
            message.insert(
                "traits".into(),
                json!({"email": format!("{first}.{}@example.com", rng.below(10_000)),
                       "plan": "pro", "first_name": first, "created_at": "2023-11-02T08:15:00Z",
                       "company": {"name": "Acme", "employees": 120}}),
            );
        }
        93..=97 => {
            message.insert("type".into(), json!("screen"));
            message.insert("name".into(), json!("Order Details"));
            message.insert(
                "properties".into(),
                json!({"order_id": format!("{}", 100_000 + rng.below(900_000)), "tab": "tracking"}),
            );
            context["app"] = json!({"name": "Summit", "version": "3.12.1", "build": "3121"});
            context["os"] = json!({"name": "iOS", "version": "17.4"});
        }
        _ => {
            message.insert("type".into(), json!("group"));
            message.insert("groupId".into(), json!(format!("org-{}", rng.below(800))));
            message.insert(
                "traits".into(),
                json!({"name": "Acme Outdoor Co", "industry": "Retail", "employees": 120, "plan": "team"}),
            );
            if user_id.is_none() {
                message.insert(
                    "userId".into(),
                    json!(format!("user-{}", rng.below(50_000))),
                );
            }
        }
    }
    message.insert("context".into(), context);
    Value::Object(message)
}

/// `count` messages from `seed`.
pub fn messages(count: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..count).map(|index| message(&mut rng, index)).collect()
}

/// The standard corpus: 1,000 messages from [`DEFAULT_SEED`].
pub fn standard() -> Vec<Value> {
    messages(1000, DEFAULT_SEED)
}

/// A `/v1/batch` body with `messages` and the batch-level `sentAt`.
pub fn batch_body(messages: &[Value]) -> Vec<u8> {
    let body = json!({"batch": messages, "sentAt": SENT_AT, "context": {"library": {"name": "analytics.js"}}});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Average size in bytes of the messages' compact JSON.
pub fn average_bytes(messages: &[Value]) -> usize {
    let total: usize = messages
        .iter()
        .map(|m| serde_json::to_vec(m).map(|b| b.len()).unwrap_or(0))
        .sum();
    total / messages.len().max(1)
}

/// Events whose free-text properties are dense with PII (every string value holds one or more
/// matches), for the PII scanner's worst-case throughput.
pub fn dense_pii_messages(count: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|index| {
            let mut message = message(&mut rng, index);
            let mut properties = Map::new();
            for (slot, note) in PII_NOTES.iter().enumerate() {
                properties.insert(
                    format!("note_{slot}"),
                    json!(format!("{note} / alt {}@example.org", rng.hex(6))),
                );
            }
            message["properties"] = Value::Object(properties);
            message
        })
        .collect()
}

/// A batch body template for the load generator: the same bytes as [`batch_body`] except that every
/// message id is `lg-<run>-<20 digits>`, patched in place per request (ids must be unique, or the
/// server's de-duplication would accept the events without routing them).
#[derive(Debug, Clone)]
pub struct BatchTemplate {
    pub body: Vec<u8>,
    /// Byte offset of each message's 20-digit counter.
    pub id_offsets: Vec<usize>,
}

/// Width of the patched counter.
pub const ID_DIGITS: usize = 20;

impl BatchTemplate {
    /// A template from `messages`; `run` (8 hex chars) keeps runs against one server apart.
    pub fn new(messages: &[Value], run: &str) -> BatchTemplate {
        let placeholder = "0".repeat(ID_DIGITS);
        let mut patched: Vec<Value> = messages.to_vec();
        for message in &mut patched {
            message["messageId"] = json!(format!("lg-{run}-{placeholder}"));
        }
        let body = batch_body(&patched);
        let needle = format!("\"messageId\":\"lg-{run}-");
        let mut id_offsets = Vec::with_capacity(messages.len());
        let mut from = 0;
        while let Some(found) = find(&body[from..], needle.as_bytes()) {
            let offset = from + found + needle.len();
            id_offsets.push(offset);
            from = offset + ID_DIGITS;
        }
        BatchTemplate { body, id_offsets }
    }

    /// Writes the ids `first_id..` into `out` (a copy of the template).
    pub fn fill(&self, out: &mut Vec<u8>, first_id: u64) {
        out.clear();
        out.extend_from_slice(&self.body);
        for (index, offset) in self.id_offsets.iter().enumerate() {
            write_digits(
                &mut out[*offset..*offset + ID_DIGITS],
                first_id + index as u64,
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Writes `value` zero-padded into `out` (its length is the width).
fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_and_about_500_bytes() {
        let first = standard();
        assert_eq!(first, standard());
        let average = average_bytes(&first);
        assert!((450..=560).contains(&average), "average {average} bytes");
        let with_pii = first
            .iter()
            .filter(|m| {
                let text = m.to_string();
                text.contains("@example") || text.contains("555") || text.contains("4111")
            })
            .count();
        assert!(with_pii > 100 && with_pii < 300, "{with_pii} with PII");
    }

    #[test]
    fn template_patches_unique_ids() {
        let messages = messages(10, 7);
        let template = BatchTemplate::new(&messages, "abcd0123");
        assert_eq!(template.id_offsets.len(), 10);
        let mut body = Vec::new();
        template.fill(&mut body, 41);
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed["batch"][0]["messageId"],
            "lg-abcd0123-00000000000000000041"
        );
        assert_eq!(
            parsed["batch"][9]["messageId"],
            "lg-abcd0123-00000000000000000050"
        );
    }
}
