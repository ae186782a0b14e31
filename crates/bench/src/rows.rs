//! Rows of the raw SQL this tool sends (`diesel::sql_query`), shared by its phases.

use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use uuid::Uuid;

/// `SELECT count(*) AS n …`
#[derive(diesel::QueryableByName)]
pub struct Count {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// `SELECT id …`
#[derive(diesel::QueryableByName)]
pub struct Id {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
}
