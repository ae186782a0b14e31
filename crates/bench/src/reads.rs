//! The read operations: through read-api, and the baseline, the same queries read-api runs
//! (`storage::products::find`, and the first page of the keyset listing) sent by this tool
//! straight to the replicas, alternating between them as read-api's default strategy does.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::Rng;
use storage::DbPool;
use storage::products::ProductRow;
use storage::schema::products;
use uuid::Uuid;

use crate::load::{OpResult, db_error_kind, http_error_kind};

/// Rows a listing asks for.
pub const PAGE: i64 = 100;

type Op = Pin<Box<dyn Future<Output = OpResult> + Send>>;

/// Answers counted by the source read-api names in `X-Served-By`.
#[derive(Clone, Default)]
pub struct ServedBy(Arc<Mutex<BTreeMap<String, u64>>>);

impl ServedBy {
    fn count(&self, response: &reqwest::Response) {
        let source = response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)");
        let mut tally = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match tally.get_mut(source) {
            Some(n) => *n += 1,
            None => {
                tally.insert(source.to_owned(), 1);
            }
        }
    }

    /// The tally so far, emptied.
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn pick(ids: &[Uuid]) -> Option<Uuid> {
    if ids.is_empty() {
        return None;
    }
    let index = rand::rng().random_range(0..ids.len());
    ids.get(index).copied()
}

/// `GET /api/products/{id}` for a random existing id, expecting 200.
pub fn api_get(
    client: reqwest::Client,
    base_url: &str,
    ids: Arc<Vec<Uuid>>,
    served_by: ServedBy,
) -> impl Fn() -> Op + Send + Sync + 'static {
    let base: Arc<str> = format!("{}/api/products", base_url.trim_end_matches('/')).into();
    move || {
        let client = client.clone();
        let id = pick(&ids);
        let url = id.map(|id| format!("{base}/{id}"));
        let served_by = served_by.clone();
        Box::pin(async move {
            let url = url.ok_or("no ids to read")?;
            fetch(&client, &url, &served_by).await
        })
    }
}

/// `GET /api/products?limit=100`, expecting 200.
pub fn api_list(
    client: reqwest::Client,
    base_url: &str,
    served_by: ServedBy,
) -> impl Fn() -> Op + Send + Sync + 'static {
    let url: Arc<str> = format!(
        "{}/api/products?limit={PAGE}",
        base_url.trim_end_matches('/')
    )
    .into();
    move || {
        let client = client.clone();
        let url = Arc::clone(&url);
        let served_by = served_by.clone();
        Box::pin(async move { fetch(&client, &url, &served_by).await })
    }
}

/// `GET` of a URL picked at random from `urls`, expecting 200.
pub fn api_any(
    client: reqwest::Client,
    urls: Arc<Vec<String>>,
    served_by: ServedBy,
) -> impl Fn() -> Op + Send + Sync + 'static {
    move || {
        let client = client.clone();
        let url = (!urls.is_empty()).then(|| urls[rand::rng().random_range(0..urls.len())].clone());
        let served_by = served_by.clone();
        Box::pin(async move {
            let url = url.ok_or("no URLs to read")?;
            fetch(&client, &url, &served_by).await
        })
    }
}

async fn fetch(client: &reqwest::Client, url: &str, served_by: &ServedBy) -> OpResult {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| http_error_kind(&e))?;
    served_by.count(&response);
    let status = response.status();
    // Read the whole body: a client of the API does.
    let _body = response.bytes().await.map_err(|e| http_error_kind(&e))?;
    if status == reqwest::StatusCode::OK {
        Ok(None)
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

/// Round-robin over the replica pools.
#[derive(Clone)]
pub struct Replicas {
    pools: Arc<Vec<DbPool>>,
    next: Arc<AtomicUsize>,
    deadline: Duration,
}

impl Replicas {
    pub fn new(pools: Vec<DbPool>, deadline: Duration) -> Self {
        Self {
            pools: Arc::new(pools),
            next: Arc::new(AtomicUsize::new(0)),
            deadline,
        }
    }

    fn choose(&self) -> Option<DbPool> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.pools.get(n % self.pools.len().max(1)).cloned()
    }
}

/// The baseline of `GET /api/products/{id}`: the lookup read-api runs, on a replica. A
/// missing or deleted id is an error, as a 404 would be.
pub fn direct_get(replicas: Replicas, ids: Arc<Vec<Uuid>>) -> impl Fn() -> Op + Send + Sync {
    move || {
        let pool = replicas.choose();
        let id = pick(&ids);
        let deadline = replicas.deadline;
        Box::pin(async move {
            let (pool, id) = pool.zip(id).ok_or("no replica or no ids")?;
            let work = async {
                let mut conn = pool.get().await.map_err(|e| db_error_kind(&e))?;
                match storage::products::find(&mut conn, domain_id(id))
                    .await
                    .map_err(|e| db_error_kind(&e))?
                {
                    Some(product) if !product.is_deleted() => Ok(None),
                    _ => Err("not found".to_owned()),
                }
            };
            tokio::time::timeout(deadline, work)
                .await
                .map_err(|_| "timeout".to_owned())?
        })
    }
}

fn domain_id(id: Uuid) -> domain::ProductId {
    domain::ProductId::from(id)
}

/// The baseline of `GET /api/products?limit=100`: read-api's first-page query (live rows in
/// `(created_at, id)` order, one more than the page), decoded into products as it does.
pub fn direct_list(replicas: Replicas) -> impl Fn() -> Op + Send + Sync {
    move || {
        let pool = replicas.choose();
        let deadline = replicas.deadline;
        Box::pin(async move {
            let pool = pool.ok_or("no replica")?;
            let work = async {
                let mut conn = pool.get().await.map_err(|e| db_error_kind(&e))?;
                let rows: Vec<ProductRow> = products::table
                    .filter(products::deleted_at.is_null())
                    .select(ProductRow::as_select())
                    .order((products::created_at.asc(), products::id.asc()))
                    .limit(PAGE + 1)
                    .into_boxed()
                    .load(&mut conn)
                    .await
                    .map_err(|e| db_error_kind(&e))?;
                let mut items = Vec::with_capacity(rows.len());
                for row in rows.into_iter().take(usize::try_from(PAGE).unwrap_or(100)) {
                    items.push(row.into_product().map_err(|e| db_error_kind(&e))?);
                }
                Ok(None)
            };
            tokio::time::timeout(deadline, work)
                .await
                .map_err(|_| "timeout".to_owned())?
        })
    }
}

#[derive(serde::Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(serde::Deserialize)]
struct Status {
    replicas: Vec<SourceStatus>,
}

#[derive(serde::Deserialize)]
struct SourceStatus {
    healthy: bool,
}

/// Waits until read-api (at `read_url`) has every replica in rotation, up to a minute: a run
/// that should measure the replicas must not measure the primary standing in for them, or
/// one replica alone.
pub async fn replicas_in_rotation(client: &reqwest::Client, read_url: &str) -> anyhow::Result<()> {
    let url = format!("{}/api/replicas", read_url.trim_end_matches('/'));
    let started = std::time::Instant::now();
    loop {
        let status: Envelope<Status> = client.get(&url).send().await?.json().await?;
        if status.data.replicas.iter().all(|r| r.healthy) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("read-api does not have every replica in rotation after 60 s ({url})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
