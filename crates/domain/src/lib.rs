//! The product catalogue's shared vocabulary, with no I/O.
//!
//! - [`Product`] and its parsed fields ([`ProductName`], [`Price`], [`Stock`]): a value of these
//!   types is valid by construction.
//! - [`input`]: turning a client's JSON body into a [`NewProduct`], [`ProductFields`] or
//!   [`ProductPatch`], reporting every bad field at once.
//! - [`ChangeEvent`]: the versioned message that carries a change from the primary to the replicas.

mod decimal;
mod error;
pub mod event;
pub mod input;
mod name;
mod price;
mod product;
mod stock;

pub use error::{FieldError, InvalidInput};
pub use event::{ChangeEvent, ChangeKind, EVENT_SCHEMA_VERSION, EventDecodeError};
pub use input::{NewProduct, ProductBody, ProductFields, ProductPatch};
pub use name::ProductName;
pub use price::Price;
pub use product::{Product, ProductId, Version};
pub use stock::Stock;
