//! What a client may send to create, replace or patch a product, and how it is parsed.
//!
//! [`ProductBody`] keeps each field as the raw JSON text the client sent, so that every field
//! is parsed by its own type (an exact price, a whole stock) and reported with its own message.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::Collector;
use crate::{FieldError, InvalidInput, Price, ProductId, ProductName, Stock};

/// A product to create (`POST`); the id is generated when the client gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub id: Option<ProductId>,
    pub fields: ProductFields,
}

/// Every client-owned field of a product (`PUT` replaces all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductFields {
    pub name: ProductName,
    pub price: Price,
    pub stock: Stock,
}

/// The fields a `PATCH` changes; at least one is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductPatch {
    pub name: Option<ProductName>,
    pub price: Option<Price>,
    pub stock: Option<Stock>,
}

impl ProductPatch {
    /// The product's fields after this patch.
    pub fn apply_to(&self, current: &ProductFields) -> ProductFields {
        ProductFields {
            name: self.name.clone().unwrap_or_else(|| current.name.clone()),
            price: self.price.unwrap_or(current.price),
            stock: self.stock.unwrap_or(current.stock),
        }
    }
}

/// A request body as sent: a JSON object whose known fields are kept as raw JSON text.
///
/// Unknown and duplicate fields are refused while deserializing. The server-owned fields
/// `createdAt`, `updatedAt` and `version` are accepted and ignored, so a client can send back
/// what it read.
#[derive(Debug, Default)]
pub struct ProductBody {
    id: Option<Box<RawValue>>,
    name: Option<Box<RawValue>>,
    price: Option<Box<RawValue>>,
    stock: Option<Box<RawValue>>,
}

const CLIENT_FIELDS: &[&str] = &["id", "name", "price", "stock"];
const SERVER_FIELDS: &[&str] = &["createdAt", "updatedAt", "version"];

impl ProductBody {
    /// Parses a JSON document; see [`ProductBody`] for what is refused.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// For `POST`: name, price and stock are required; the id is optional.
    pub fn into_new_product(self) -> Result<NewProduct, InvalidInput> {
        let mut errors = Collector::default();
        let id = match self.id.as_deref() {
            Some(raw) => errors.take(parse_id(raw)).map(Some),
            None => Some(None),
        };
        let fields = self.required_fields(&mut errors);
        errors.finish()?;
        match (id, fields) {
            (Some(id), Some(fields)) => Ok(NewProduct { id, fields }),
            _ => Err(unreachable_state()),
        }
    }

    /// For `PUT /api/products/{id}`: every client-owned field is required; an id in the body
    /// must be the one in the path.
    pub fn into_fields(self, path_id: ProductId) -> Result<ProductFields, InvalidInput> {
        let mut errors = Collector::default();
        check_body_id(self.id.as_deref(), path_id, &mut errors);
        let fields = self.required_fields(&mut errors);
        errors.finish()?;
        fields.ok_or_else(unreachable_state)
    }

    /// For `PATCH /api/products/{id}`: any of name, price and stock, at least one.
    pub fn into_patch(self, path_id: ProductId) -> Result<ProductPatch, InvalidInput> {
        let mut errors = Collector::default();
        check_body_id(self.id.as_deref(), path_id, &mut errors);
        if self.name.is_none() && self.price.is_none() && self.stock.is_none() {
            errors.push(FieldError::new(
                "body",
                "a patch must change at least one of name, price and stock",
            ));
        }
        let name = self.name.and_then(|raw| errors.take(parse_name(&raw)));
        let price = self
            .price
            .and_then(|raw| errors.take(Price::parse_json(raw.get())));
        let stock = self
            .stock
            .and_then(|raw| errors.take(Stock::parse_json(raw.get())));
        errors.finish()?;
        Ok(ProductPatch { name, price, stock })
    }

    fn required_fields(&self, errors: &mut Collector) -> Option<ProductFields> {
        let name = required(errors, "name", self.name.as_deref(), parse_name);
        let price = required(errors, "price", self.price.as_deref(), |raw| {
            Price::parse_json(raw.get())
        });
        let stock = required(errors, "stock", self.stock.as_deref(), |raw| {
            Stock::parse_json(raw.get())
        });
        Some(ProductFields {
            name: name?,
            price: price?,
            stock: stock?,
        })
    }
}

fn required<T>(
    errors: &mut Collector,
    field: &'static str,
    raw: Option<&RawValue>,
    parse: impl FnOnce(&RawValue) -> Result<T, FieldError>,
) -> Option<T> {
    match raw {
        Some(raw) => errors.take(parse(raw)),
        None => {
            errors.push(FieldError::new(field, format!("{field} is required")));
            None
        }
    }
}

fn parse_name(raw: &RawValue) -> Result<ProductName, FieldError> {
    let text: String = serde_json::from_str(raw.get()).map_err(|_| {
        // The body is valid JSON, so a string that does not decode holds a `\u` escape of
        // half a surrogate pair: it is a string, just not text.
        let message = if raw.get().starts_with('"') {
            "name must be valid Unicode text (it has an unpaired \\u surrogate escape)"
        } else {
            "name must be a string"
        };
        FieldError::new("name", message)
    })?;
    ProductName::parse(&text)
}

fn parse_id(raw: &RawValue) -> Result<ProductId, FieldError> {
    let text: String = serde_json::from_str(raw.get())
        .map_err(|_| FieldError::new("id", "id must be a UUID string"))?;
    ProductId::parse(&text)
}

fn check_body_id(raw: Option<&RawValue>, path_id: ProductId, errors: &mut Collector) {
    if let Some(body_id) = raw.and_then(|raw| errors.take(parse_id(raw)))
        && body_id != path_id
    {
        errors.push(FieldError::new(
            "id",
            format!("id {body_id} in the body does not match the id {path_id} in the path"),
        ));
    }
}

/// A field parsed without error is always `Some`; this keeps that invariant out of `unwrap`.
fn unreachable_state() -> InvalidInput {
    FieldError::new("body", "the body could not be parsed").into()
}

impl<'de> serde::Deserialize<'de> for ProductBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = ProductBody;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with the product's fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProductBody, A::Error> {
        let mut body = ProductBody::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "id" => &mut body.id,
                "name" => &mut body.name,
                "price" => &mut body.price,
                "stock" => &mut body.stock,
                server if SERVER_FIELDS.contains(&server) => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                other => return Err(de::Error::unknown_field(other, CLIENT_FIELDS)),
            };
            if slot.is_some() {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            *slot = Some(map.next_value()?);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ProductBody {
        ProductBody::from_json(json.as_bytes()).unwrap()
    }

    fn messages(error: InvalidInput) -> Vec<String> {
        error.errors().iter().map(|e| e.message.clone()).collect()
    }

    const PATH_ID: &str = "0190f0a4-7c1e-7cc0-9a9d-6f0e2b1f4a10";

    fn path_id() -> ProductId {
        ProductId::parse(PATH_ID).unwrap()
    }

    #[test]
    fn parses_a_new_product() {
        let product = body(r#"{"name":" Lamp ","price":19.99,"stock":3}"#)
            .into_new_product()
            .unwrap();
        assert_eq!(product.id, None);
        assert_eq!(product.fields.name.as_str(), "Lamp");
        assert_eq!(product.fields.price.cents(), 1999);
        assert_eq!(product.fields.stock.units(), 3);
    }

    #[test]
    fn keeps_a_client_supplied_id() {
        let json = format!(r#"{{"id":"{PATH_ID}","name":"Lamp","price":1,"stock":0}}"#);
        let product = body(&json).into_new_product().unwrap();
        assert_eq!(product.id, Some(path_id()));
    }

    #[test]
    fn reports_every_bad_field_at_once() {
        let error = body(r#"{"id":"nope","name":"","price":1.005,"stock":-1}"#)
            .into_new_product()
            .unwrap_err();
        let fields: Vec<_> = error.errors().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["id", "name", "price", "stock"]);
    }

    #[test]
    fn requires_every_field_on_create_and_replace() {
        let error = body("{}").into_new_product().unwrap_err();
        assert_eq!(
            messages(error),
            ["name is required", "price is required", "stock is required"]
        );
        assert!(
            body(r#"{"name":"x","price":1}"#)
                .into_fields(path_id())
                .is_err()
        );
    }

    #[test]
    fn refuses_wrong_types() {
        for json in [
            r#"{"name":5,"price":1,"stock":1}"#,
            r#"{"name":"x","price":"1","stock":1}"#,
            r#"{"name":"x","price":1,"stock":"1"}"#,
            r#"{"name":null,"price":1,"stock":1}"#,
            r#"{"id":7,"name":"x","price":1,"stock":1}"#,
        ] {
            assert!(
                body(json).into_new_product().is_err(),
                "{json} was accepted"
            );
        }
    }

    #[test]
    fn says_why_a_string_name_is_not_text() {
        let error = body(r#"{"name":"a\ud800b","price":1,"stock":1}"#)
            .into_new_product()
            .unwrap_err();
        assert!(messages(error)[0].contains("surrogate"));
    }

    #[test]
    fn refuses_unknown_and_duplicate_fields_and_non_objects() {
        for json in [
            r#"{"name":"x","price":1,"stock":1,"colour":"red"}"#,
            r#"{"name":"x","name":"y","price":1,"stock":1}"#,
            r#"["x",1,1]"#,
            "42",
            "null",
        ] {
            assert!(ProductBody::from_json(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn ignores_server_owned_fields() {
        let json = r#"{"name":"x","price":1,"stock":1,"createdAt":"whatever","updatedAt":null,"version":99}"#;
        assert!(body(json).into_new_product().is_ok());
    }

    #[test]
    fn replace_checks_the_body_id_against_the_path() {
        let same = format!(r#"{{"id":"{PATH_ID}","name":"x","price":1,"stock":1}}"#);
        assert!(body(&same).into_fields(path_id()).is_ok());
        let other =
            r#"{"id":"00000000-0000-0000-0000-000000000001","name":"x","price":1,"stock":1}"#;
        let error = body(other).into_fields(path_id()).unwrap_err();
        assert!(messages(error)[0].contains("does not match"));
    }

    #[test]
    fn patch_takes_any_subset_but_not_none() {
        let patch = body(r#"{"price":2.5}"#).into_patch(path_id()).unwrap();
        assert_eq!(patch.price.map(Price::cents), Some(250));
        assert_eq!((patch.name, patch.stock), (None, None));
        assert!(body("{}").into_patch(path_id()).is_err());
        assert!(body(r#"{"version":3}"#).into_patch(path_id()).is_err());
        assert!(body(r#"{"stock":null}"#).into_patch(path_id()).is_err());
    }

    #[test]
    fn patch_applies_over_current_fields() {
        let current = body(r#"{"name":"a","price":1,"stock":1}"#)
            .into_fields(path_id())
            .unwrap();
        let patch = body(r#"{"stock":9}"#).into_patch(path_id()).unwrap();
        let next = patch.apply_to(&current);
        assert_eq!(next.name, current.name);
        assert_eq!(next.stock.units(), 9);
    }
}
