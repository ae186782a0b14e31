//! Fuzzing with proptest: the request body parser and the change-event decoder take arbitrary
//! input and always answer `Ok` or a clear error, never a panic.
//!
//! Inputs are random bytes, JSON-ish documents built from a grammar of the real field names
//! with hostile values, and valid encodings with bytes flipped, inserted or deleted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Utc};
use domain::{
    ChangeEvent, ChangeKind, EventDecodeError, InvalidInput, Price, Product, ProductBody,
    ProductFields, ProductId, ProductName, ProductPatch, Stock, Version,
};
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;

const PATH_ID: &str = "0190f0a4-7c1e-7cc0-9a9d-6f0e2b1f4a10";

fn path_id() -> ProductId {
    ProductId::parse(PATH_ID).unwrap()
}

// ---- Checks shared by every property ----------------------------------------------------

/// A refusal lists at least one field, each with a message a person can read.
fn assert_clear(error: &InvalidInput) {
    assert!(!error.errors().is_empty(), "an error without a field");
    for field in error.errors() {
        assert!(
            ["id", "name", "price", "stock", "body"].contains(&field.field),
            "unexpected field {:?}",
            field.field
        );
        assert!(
            field.message.len() > 5,
            "unclear message {:?}",
            field.message
        );
    }
    assert!(!error.to_string().is_empty());
}

/// What the types promise for accepted fields.
fn assert_valid_name(name: &ProductName) {
    let text = name.as_str();
    assert_eq!(text, text.trim());
    assert!((1..=ProductName::MAX_CHARS).contains(&text.chars().count()));
    assert!(!text.chars().any(char::is_control));
}

fn assert_valid_fields(fields: &ProductFields) {
    assert_valid_name(&fields.name);
    assert!((0..=Price::MAX_CENTS).contains(&fields.price.cents()));
    assert!(fields.stock.units() >= 0);
}

fn assert_valid_patch(patch: &ProductPatch) {
    assert!(patch.name.is_some() || patch.price.is_some() || patch.stock.is_some());
    if let Some(name) = &patch.name {
        assert_valid_name(name);
    }
    if let Some(price) = patch.price {
        assert!((0..=Price::MAX_CENTS).contains(&price.cents()));
    }
    if let Some(stock) = patch.stock {
        assert!(stock.units() >= 0);
    }
}

/// Parses `json` as a body and, when it is one, as a create, a replace and a patch: each
/// gives valid values or a clear refusal. Returns whether the body parsed.
fn check_body(json: &[u8]) -> bool {
    match ProductBody::from_json(json) {
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return false;
        }
        Ok(body) => match body.into_new_product() {
            Ok(new) => assert_valid_fields(&new.fields),
            Err(error) => assert_clear(&error),
        },
    }
    match ProductBody::from_json(json).unwrap().into_fields(path_id()) {
        Ok(fields) => assert_valid_fields(&fields),
        Err(error) => assert_clear(&error),
    }
    match ProductBody::from_json(json).unwrap().into_patch(path_id()) {
        Ok(patch) => assert_valid_patch(&patch),
        Err(error) => assert_clear(&error),
    }
    true
}

/// Decodes `bytes`: a refusal has a known reason and a message; an accepted event is
/// consistent and survives another encode and decode unchanged.
fn check_decode(bytes: &[u8]) -> Option<ChangeEvent> {
    match ChangeEvent::decode(bytes) {
        Err(error) => {
            assert!(
                [
                    "malformed",
                    "unsupported_schema",
                    "inconsistent",
                    "invalid_product"
                ]
                .contains(&error.reason())
            );
            assert!(error.to_string().len() > 10);
            None
        }
        Ok(event) => {
            assert!(event.seq >= 1);
            assert_valid_name(&event.product.name);
            assert_eq!(
                event.kind() == ChangeKind::Delete,
                event.product.deleted_at.is_some()
            );
            assert_eq!(ChangeEvent::decode(&event.encode()).as_ref(), Ok(&event));
            Some(event)
        }
    }
}

// ---- Generators ---------------------------------------------------------------------------

/// Keys a body may have, and some it may not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "id", "name", "price", "stock", "createdAt", "updatedAt", "version",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(vec!["colour", "Name", "", "price ", "__proto__"])
            .prop_map(String::from),
        1 => "\\PC{0,8}",
    ]
}

/// JSON number text, in range or wildly out of it, with any scale.
fn number() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        "[0-9]{1,24}",
        prop::option::of("[0-9]{1,6}"),
        prop::option::of(("[eE]", "[-+]?", "[0-9]{1,5}")),
    )
        .prop_map(|(negative, int, frac, exp)| {
            let mut text = String::new();
            if negative {
                text.push('-');
            }
            text.push_str(&int);
            if let Some(frac) = frac {
                text.push('.');
                text.push_str(&frac);
            }
            if let Some((e, sign, digits)) = exp {
                text.push_str(&format!("{e}{sign}{digits}"));
            }
            text
        })
}

/// A JSON string literal: any characters, escapes good and bad.
fn string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(|c| {
            let quoted = serde_json::to_string(&c.to_string()).unwrap();
            quoted[1..quoted.len() - 1].to_owned()
        }),
        1 => prop::sample::select(vec![
            "\\u0000", "\\u0007", "\\n", "\\t", " ", "\\ud800", "\\udc00", "\\ud83d\\ude00",
            "\\u00a0", "'; DROP TABLE products; --", "NaN", "Infinity", "%", "_", "\\\\",
            "\\x", "\\u12", "\n",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// A JSON-ish value: mostly JSON, sometimes a token JSON does not have.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "null",
            "true",
            "false",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-0",
            "99999999999999999999",
            "0.001",
            "1.234",
            "\"NaN\"",
            "\"Infinity\"",
            "{}",
            "[]",
            "\"0190f0a4-7c1e-7cc0-9a9d-6f0e2b1f4a10\"",
            "",
        ])
        .prop_map(String::from),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        number(),
        string(),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|members| object(&members)),
        ]
    })
}

fn object(members: &[(String, String)]) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(key, value)| format!("{}:{value}", serde_json::to_string(key).unwrap()))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// A value for a body field: mostly one of the right kind (valid or not quite), else anything
/// from the grammar.
fn field_value(field: &'static str) -> BoxedStrategy<String> {
    let right_kind = match field {
        "id" => any::<u128>()
            .prop_map(|n| format!("\"{}\"", Uuid::from_u128(n)))
            .boxed(),
        "name" => prop_oneof![
            name_text().prop_map(|name| serde_json::to_string(&name).unwrap()),
            string(),
        ]
        .boxed(),
        "price" => prop_oneof![price_text().prop_map(|(_, text)| text), number()].boxed(),
        "stock" => prop_oneof![(0..=Stock::MAX).prop_map(|n| n.to_string()), number()].boxed(),
        _ => value().boxed(),
    };
    prop_oneof![3 => right_kind, 1 => value()].boxed()
}

/// A body as a client might send it: the client fields, each maybe present with a value of
/// the right kind or not, sometimes extra members, in any order, sometimes cut short.
fn body_text() -> impl Strategy<Value = String> {
    let field = |name: &'static str, present: f64| {
        prop::option::weighted(present, field_value(name)).prop_map(move |v| (name, v))
    };
    let extra = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec((key(), value()), 1..3),
    ];
    (
        (
            field("id", 0.2),
            field("name", 0.85),
            field("price", 0.85),
            field("stock", 0.85),
        ),
        extra,
        any::<Index>(),
        prop::option::weighted(0.1, any::<Index>()),
    )
        .prop_map(|((id, name, price, stock), extra, order, cut)| {
            let mut members: Vec<(String, String)> = [id, name, price, stock]
                .into_iter()
                .filter_map(|(key, value)| value.map(|value| (key.to_owned(), value)))
                .chain(extra)
                .collect();
            if !members.is_empty() {
                let shift = order.index(members.len());
                members.rotate_left(shift);
            }
            let text = object(&members);
            match cut {
                Some(cut) => {
                    let at = cut.index(text.len() + 1);
                    let at = (0..=at)
                        .rev()
                        .find(|i| text.is_char_boundary(*i))
                        .unwrap_or(0);
                    text[..at].to_owned()
                }
                None => text,
            }
        })
}

/// A name a client may use: 1 to 200 characters after trimming, none of them control.
fn name_text() -> impl Strategy<Value = String> {
    "\\s{0,2}[^\\s\\p{Cc}][^\\p{Cc}]{0,150}[^\\s\\p{Cc}]?\\s{0,2}"
        .prop_filter("over 200 characters", |s| {
            s.trim().chars().count() <= ProductName::MAX_CHARS
        })
}

/// A price in cents and one of the ways a client writes it.
fn price_text() -> impl Strategy<Value = (i64, String)> {
    (0..=Price::MAX_CENTS, 0..4_u8).prop_map(|(cents, form)| {
        let price = Price::from_cents(cents).unwrap();
        let text = match form {
            0 => price.to_string(),
            1 => serde_json::to_string(&price).unwrap(),
            2 => format!("{cents}e-2"),
            _ => format!("{}0E-3", cents),
        };
        (cents, text)
    })
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    prop_oneof![
        // Any time chrono can hold, to the nanosecond.
        (min..=max, 0..1_000_000_000_u32)
            .prop_filter_map("out of range", |(s, n)| DateTime::from_timestamp(s, n)),
        // Times a product really has: microseconds, this century.
        (946_684_800_000_000..4_102_444_800_000_000_i64)
            .prop_filter_map("out of range", DateTime::from_timestamp_micros),
    ]
}

fn event() -> impl Strategy<Value = ChangeEvent> {
    (
        (any::<u128>(), 1..=i64::MAX, any::<u128>(), name_text()),
        (0..=Price::MAX_CENTS, 0..=Stock::MAX, 1..=i64::MAX),
        (timestamp(), timestamp(), any::<bool>()),
    )
        .prop_map(
            |((event_id, seq, id, name), (cents, stock, version), (created, updated, deleted))| {
                ChangeEvent {
                    event_id: Uuid::from_u128(event_id),
                    seq,
                    product: Product {
                        id: ProductId::from(Uuid::from_u128(id)),
                        name: ProductName::parse(&name).unwrap(),
                        price: Price::from_cents(cents).unwrap(),
                        stock: Stock::new(stock).unwrap(),
                        created_at: created,
                        updated_at: updated,
                        version: Version::new(version).unwrap(),
                        deleted_at: deleted.then_some(updated),
                    },
                }
            },
        )
}

/// A replacement for a field of an encoded event: often of the right type, so that decoding
/// gets past the JSON to the consistency and product checks.
fn event_field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        value(),
        any::<i64>().prop_map(|n| n.to_string()),
        (0..4_i64).prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| format!("\"{}\"", Uuid::from_u128(n))),
        timestamp().prop_map(|at| serde_json::to_string(&at).unwrap()),
        prop::sample::select(vec!["\"upsert\"", "\"delete\"", "\"Upsert\"", "null"])
            .prop_map(String::from),
        name_text().prop_map(|name| serde_json::to_string(&name).unwrap()),
    ]
}

/// One edit of an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Insert(Index, u8),
    Delete(Index, Index),
    Replace(Index, u8),
    Truncate(Index),
    Repeat(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0..8_u8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        (any::<Index>(), any::<Index>()).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace(at, byte)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(at, len)| Mutation::Repeat(at, len)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        bytes.push(b'{');
    }
    let len = bytes.len();
    match mutation {
        Mutation::FlipBit(at, bit) => bytes[at.index(len)] ^= 1 << bit,
        Mutation::Insert(at, byte) => bytes.insert(at.index(len + 1), *byte),
        Mutation::Delete(at, n) => {
            let start = at.index(len);
            let end = start + n.index(len - start).min(16) + 1;
            bytes.drain(start..end.min(len));
        }
        Mutation::Replace(at, byte) => bytes[at.index(len)] = *byte,
        Mutation::Truncate(at) => bytes.truncate(at.index(len)),
        Mutation::Repeat(at, n) => {
            let start = at.index(len);
            let end = (start + n.index(len - start) + 1).min(start + 32);
            let copy = bytes[start..end.min(len)].to_vec();
            bytes.splice(start..start, copy);
        }
    }
}

/// Paths of the encoded event's fields, for edits of the JSON tree.
const EVENT_FIELDS: &[&[&str]] = &[
    &["schema_version"],
    &["event_id"],
    &["seq"],
    &["kind"],
    &["product_id"],
    &["version"],
    &["occurred_at"],
    &["product"],
    &["product", "id"],
    &["product", "name"],
    &["product", "price_cents"],
    &["product", "stock"],
    &["product", "created_at"],
    &["product", "updated_at"],
    &["product", "version"],
    &["product", "deleted_at"],
];

// ---- Properties ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// (a) Arbitrary bytes as a request body.
    #[test]
    fn body_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_body(&bytes);
    }

    /// (a) Documents from the grammar: the real field names with hostile values, cut short
    /// at random.
    #[test]
    fn body_parser_takes_any_json_ish_document(text in body_text()) {
        check_body(text.as_bytes());
    }

    /// (b) Arbitrary bytes as a message body.
    #[test]
    fn event_decoder_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_decode(&bytes);
    }

    /// (b) Every valid event survives its encoding exactly.
    #[test]
    fn events_round_trip(event in event()) {
        prop_assert_eq!(ChangeEvent::decode(&event.encode()), Ok(event));
    }

    /// (b) A valid encoding with bytes flipped, inserted, deleted, replaced or repeated.
    #[test]
    fn event_decoder_takes_mutated_encodings(
        event in event(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = event.encode();
        for mutation in &mutations {
            mutate(&mut bytes, mutation);
        }
        check_decode(&bytes);
    }

    /// (b) A valid encoding with one field replaced by a grammar value (or removed).
    #[test]
    fn event_decoder_takes_edited_fields(
        event in event(),
        field in prop::sample::select(EVENT_FIELDS),
        replacement in prop::option::of(event_field_value()),
    ) {
        let mut json: serde_json::Value = serde_json::from_slice(&event.encode()).unwrap();
        let (last, parents) = field.split_last().unwrap();
        let parent = parents.iter().fold(&mut json, |node, key| &mut node[*key]);
        let object = parent.as_object_mut().unwrap();
        match replacement.and_then(|text| serde_json::from_str(&text).ok()) {
            Some(value) => object.insert((*last).to_owned(), value),
            None => object.remove(*last),
        };
        let decoded = check_decode(&serde_json::to_vec(&json).unwrap());
        // An edit may still leave a valid event, but only one about the product it names.
        if let Some(decoded) = decoded {
            let named = json["product_id"].as_str().and_then(|id| Uuid::parse_str(id).ok());
            prop_assert_eq!(Some(decoded.product_id().as_uuid()), named);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) A well-formed body of valid values, in any field order and with server fields a
    /// client read back, is accepted with exactly those values.
    #[test]
    fn valid_bodies_are_accepted_exactly(
        name in name_text(),
        (cents, price) in price_text(),
        stock in 0..=Stock::MAX,
        id in prop::option::of(any::<u128>()),
        server_fields in any::<bool>(),
        order in any::<Index>(),
    ) {
        let mut members = vec![
            ("name".to_owned(), serde_json::to_string(&name).unwrap()),
            ("price".to_owned(), price),
            ("stock".to_owned(), stock.to_string()),
        ];
        if let Some(id) = id {
            members.push(("id".into(), format!("\"{}\"", Uuid::from_u128(id))));
        }
        if server_fields {
            members.push(("version".into(), "7".into()));
            members.push(("createdAt".into(), "\"2026-01-01T00:00:00Z\"".into()));
        }
        let shift = order.index(members.len());
        members.rotate_left(shift);
        let json = object(&members);
        let new = ProductBody::from_json(json.as_bytes()).unwrap().into_new_product();
        let new = new.unwrap_or_else(|e| panic!("{json}: {e}"));
        prop_assert_eq!(new.id, id.map(|id| ProductId::from(Uuid::from_u128(id))));
        prop_assert_eq!(new.fields.name.as_str(), name.trim());
        prop_assert_eq!(new.fields.price.cents(), cents);
        prop_assert_eq!(i64::from(new.fields.stock.units()), stock);
    }

    /// (b) Decoding refuses what the codec could not have written, with the reason the
    /// replicator dead-letters it under.
    #[test]
    fn unsupported_schemas_are_named(event in event(), schema in 2..u64::MAX) {
        let mut json: serde_json::Value = serde_json::from_slice(&event.encode()).unwrap();
        json["schema_version"] = schema.into();
        prop_assert_eq!(
            ChangeEvent::decode(&serde_json::to_vec(&json).unwrap()),
            Err(EventDecodeError::UnsupportedSchema(schema))
        );
    }
}
