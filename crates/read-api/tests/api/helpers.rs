use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use futures_util::future::join_all;
use read_api::{Application, Settings, Strategy};
use reqwest::{Method, Response};
use serde_json::Value;
use service_kit::SecretUrl;
use service_kit::groups::{DbSettings, HttpSettings, ReplicaSettings};
use storage::products::ProductRow;
use storage::schema::products;
use test_support::{TcpProxy, TestDatabase};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A migrated primary and replicas, each a database of its own, dropped with the value.
pub struct Cluster {
    pub primary: Arc<TestDatabase>,
    pub replicas: Vec<Arc<TestDatabase>>,
}

impl Cluster {
    /// A primary and `replicas` replicas, all migrated, the replicas level as the replicator
    /// leaves them after its first full copy (of an empty primary).
    pub async fn new(replicas: usize) -> Self {
        Self::with_unmigrated(replicas, 0).await
    }

    /// Like [`Cluster::new`], plus `bare` replica databases without any schema (last).
    pub async fn with_unmigrated(migrated: usize, bare: usize) -> Self {
        let (primary, mut replicas, bare) = tokio::join!(
            migrated_database(),
            join_all((0..migrated).map(|_| level_replica())),
            join_all((0..bare).map(|_| TestDatabase::create())),
        );
        replicas.extend(bare);
        Self {
            primary: Arc::new(primary),
            replicas: replicas.into_iter().map(Arc::new).collect(),
        }
    }

    /// Inserts `rows` into the primary and every replica.
    pub async fn insert_everywhere(&self, rows: &[ProductRow]) {
        insert(&self.primary, rows).await;
        for replica in &self.replicas {
            insert(replica, rows).await;
        }
    }
}

pub async fn migrated_database() -> TestDatabase {
    let db = TestDatabase::create().await;
    storage::migrations::run_pending(db.url(), Duration::from_secs(60))
        .await
        .unwrap();
    db
}

/// A migrated replica whose history is known (a new one starts as unknown history, out of
/// rotation until the replicator has copied it in full).
pub async fn level_replica() -> TestDatabase {
    let db = migrated_database().await;
    sql(
        &db,
        "UPDATE replication_status SET behind_since = NULL, behind_token = NULL",
    )
    .await;
    db
}

/// Settings for a test app over `cluster`: a free port, one worker, small pools, quick
/// health checks and generous per-read timeouts (tests run in parallel on 2 cores).
pub fn test_settings(cluster: &Cluster) -> Settings {
    Settings {
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
            http_workers: 1,
            shutdown_timeout_s: 5,
        },
        replicas: ReplicaSettings {
            replica_urls: cluster
                .replicas
                .iter()
                .map(|db| SecretUrl::new(db.url()))
                .collect(),
            ..ReplicaSettings::local("catalogue_reader")
        },
        db: DbSettings {
            database_url: SecretUrl::new(cluster.primary.url()),
            db_pool_size: 3,
            db_connect_timeout_ms: Duration::from_secs(2),
        },
        fallback_to_primary: true,
        strategy: Strategy::RoundRobin,
        db_statement_timeout_ms: Duration::from_secs(3),
        read_timeout_ms: Duration::from_secs(3),
        request_deadline_ms: Duration::from_secs(8),
        health_check_interval_ms: Duration::from_millis(200),
        health_check_timeout_ms: Duration::from_secs(3),
        max_consecutive_errors: 3,
        cooldown_ms: Duration::from_millis(500),
        ..Settings::default()
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(settings: Settings) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        service_kit::telemetry::init(service_kit::telemetry::LogFormat::Text);
    }
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, shutdown.clone())
        .await
        .expect("app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        shutdown,
        task: Some(task),
    }
}

/// An answer's status, `X-Served-By`, `Allow` and JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub served_by: Option<String>,
    pub allow: Option<String>,
    pub body: Value,
}

impl TestApp {
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    pub async fn answer(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.answer_to(Method::GET, path, headers).await
    }

    /// Like [`TestApp::answer`], with any method.
    pub async fn answer_to(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        into_answer(request.send().await.unwrap()).await
    }

    /// `data` of `GET /api/replicas`.
    pub async fn replicas(&self) -> Value {
        let answer = self.answer("/api/replicas", &[]).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body["data"].clone()
    }

    /// One replica's entry in `GET /api/replicas`.
    pub async fn replica(&self, name: &str) -> Value {
        let data = self.replicas().await;
        data["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no replica {name} in {data}"))
    }

    /// Waits (bounded) until `name` is in rotation or out of it, and returns its entry.
    pub async fn wait_for_health(&self, name: &str, healthy: bool) -> Value {
        let what = format!("{name} to become healthy={healthy}");
        test_support::eventually(Duration::from_secs(20), &what, async || {
            let replica = self.replica(name).await;
            (replica["healthy"] == healthy).then_some(replica)
        })
        .await
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn into_answer(response: Response) -> Answer {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let served_by = header("x-served-by");
    let allow = header("allow");
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        served_by,
        allow,
        body,
    }
}

/// Now, at PostgreSQL's precision, so rows compare equal after a round trip.
pub fn now_micros() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

/// A live product at version 1, created now.
pub fn row(name: &str, price_cents: i64, stock: i32) -> ProductRow {
    row_at(name, price_cents, stock, now_micros())
}

pub fn row_at(name: &str, price_cents: i64, stock: i32, created_at: DateTime<Utc>) -> ProductRow {
    ProductRow {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        price_cents,
        stock,
        created_at,
        updated_at: created_at,
        version: 1,
        deleted_at: None,
    }
}

/// `row` as a tombstone at version 2.
pub fn tombstone(mut row: ProductRow) -> ProductRow {
    row.version = 2;
    row.deleted_at = Some(row.updated_at);
    row
}

/// Inserts `rows` as replication would: on a replica, `last_event_at` moves up to the newest
/// of them (on the primary that row is unused).
pub async fn insert(db: &TestDatabase, rows: &[ProductRow]) {
    let mut conn = db.connect().await;
    diesel::insert_into(products::table)
        .values(rows)
        .execute(&mut conn)
        .await
        .unwrap();
    record_applied(&mut conn, rows.iter().map(|r| r.updated_at).max()).await;
}

async fn record_applied(conn: &mut storage::AsyncPgConnection, newest: Option<DateTime<Utc>>) {
    use diesel::sql_types::{Nullable, Timestamptz};
    diesel::sql_query("UPDATE replication_status SET last_event_at = GREATEST(last_event_at, $1)")
        .bind::<Nullable<Timestamptz>, _>(newest)
        .execute(conn)
        .await
        .unwrap();
}

/// Writes `row` over the stored one with the same id (as a later replicated change would).
pub async fn upsert(db: &TestDatabase, row: &ProductRow) {
    let mut conn = db.connect().await;
    diesel::insert_into(products::table)
        .values(row)
        .on_conflict(products::id)
        .do_update()
        .set(row)
        .execute(&mut conn)
        .await
        .unwrap();
    record_applied(&mut conn, Some(row.updated_at)).await;
}

pub async fn sql(db: &TestDatabase, statements: &str) {
    let mut conn = db.connect().await;
    conn.batch_execute(statements).await.unwrap();
}

/// A proxy in front of `db`'s server, and `db`'s URL through it.
pub async fn behind_proxy(db: &TestDatabase) -> (TcpProxy, String) {
    let proxy = TcpProxy::start(&db.server()).await;
    let proxied = db.url_via(&proxy.host());
    (proxy, proxied)
}

/// The ids of the products in a list answer, in order.
pub fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}
