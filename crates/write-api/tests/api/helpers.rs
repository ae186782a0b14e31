use std::time::Duration;

use amqprs::channel::BasicGetArguments;
use diesel_async::RunQueryDsl;
use domain::ChangeEvent;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use service_kit::groups::{AmqpSettings, DbSettings, HttpSettings};
use test_support::{TestDatabase, TestVhost};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use write_api::{Application, Settings};

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: std::sync::Arc<TestDatabase>,
    pub vhost: std::sync::Arc<TestVhost>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Settings for a test app: a free port, one worker, quick polling and reconnects.
pub fn test_settings(db: &TestDatabase, rabbitmq_url: &str) -> Settings {
    Settings {
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
            http_workers: 1,
            shutdown_timeout_s: 5,
        },
        db: DbSettings {
            database_url: service_kit::SecretUrl::new(db.url()),
            db_pool_size: 4,
            ..Settings::default().db
        },
        broker: AmqpSettings {
            rabbitmq_url: service_kit::SecretUrl::new(rabbitmq_url),
            amqp_connect_timeout_ms: Duration::from_secs(2),
            amqp_reconnect_max_ms: Duration::from_millis(500),
            ..AmqpSettings::local()
        },
        relay_poll_interval_ms: Duration::from_millis(200),
        relay_confirm_timeout_ms: Duration::from_secs(3),
        ..Settings::default()
    }
}

pub async fn spawn_app() -> TestApp {
    let db = std::sync::Arc::new(TestDatabase::create().await);
    let vhost = std::sync::Arc::new(TestVhost::create().await);
    let settings = test_settings(&db, &vhost.url());
    spawn_with(settings, db, vhost).await
}

/// Starts an app with `settings` on an existing database and vhost (kept alive by the app).
pub async fn spawn_with(
    settings: Settings,
    db: std::sync::Arc<TestDatabase>,
    vhost: std::sync::Arc<TestVhost>,
) -> TestApp {
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
        db,
        vhost,
        shutdown,
        task: Some(task),
    }
}

impl TestApp {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
    }

    pub async fn send(&self, method: Method, path: &str, body: &Value) -> Response {
        self.request(method, path).json(body).send().await.unwrap()
    }

    pub async fn create(&self, body: Value) -> Response {
        self.send(Method::POST, "/api/products", &body).await
    }

    /// Creates a product and returns the `data` of the answer.
    pub async fn create_ok(&self, name: &str, price: f64, stock: i64) -> Value {
        let response = self
            .create(json!({"name": name, "price": price, "stock": stock}))
            .await;
        assert_eq!(response.status(), 201);
        body(response).await["data"].clone()
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Rows in `products`, tombstones included.
    pub async fn product_rows(&self) -> i64 {
        let mut conn = self.db.connect().await;
        storage::replica::summarize(&mut conn)
            .await
            .unwrap()
            .all_rows
    }

    /// Outbox rows ever inserted, the published (and so deleted) ones included: how far the
    /// outbox's sequence has moved. An insert that was rolled back counts too.
    pub async fn outbox_rows_written(&self) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Written {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            rows: i64,
        }
        let mut conn = self.db.connect().await;
        diesel::sql_query(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS rows FROM outbox_seq_seq",
        )
        .get_result::<Written>(&mut conn)
        .await
        .unwrap()
        .rows
    }

    pub async fn outbox_backlog(&self) -> i64 {
        let mut conn = self.db.connect().await;
        storage::outbox::backlog(&mut conn).await.unwrap().rows
    }

    /// Takes every message now in `queue` off it: the change events (pipeline heartbeats,
    /// which share `products.sync`, are skipped).
    pub async fn drain_queue(&self, queue: &str) -> Vec<ChangeEvent> {
        let connection = self.vhost.connect().await;
        let channel = connection.open_channel(None).await.unwrap();
        let mut events = Vec::new();
        while let Some((_, properties, body)) = channel
            .basic_get(BasicGetArguments::new(queue).no_ack(true).finish())
            .await
            .unwrap()
        {
            if properties.message_type().map(String::as_str)
                == Some(messaging::topology::HEARTBEAT_TYPE)
            {
                continue;
            }
            events.push(ChangeEvent::decode(&body).expect("a valid change event"));
        }
        let _ = connection.close().await;
        events
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn body(response: Response) -> Value {
    response.json().await.expect("a JSON body")
}

impl TestApp {
    /// POSTs a product and returns the status with the JSON answer, whatever it is.
    pub async fn create_ok_status(&self, body: Value) -> (u16, Value) {
        let response = self.create(body).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// JSON for a product with these fields.
pub fn product(name: &str, price: f64, stock: i64) -> Value {
    json!({"name": name, "price": price, "stock": stock})
}
