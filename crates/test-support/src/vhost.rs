use amqprs::channel::QueueDeclareArguments;
use amqprs::connection::{Connection, OpenConnectionArguments};

use crate::{block_on_side_thread, unique_name};

const DEFAULT_API: &str = "http://127.0.0.1:15672";

/// A RabbitMQ virtual host of its own for one test, deleted (with its queues) on drop.
///
/// Made through the management HTTP API (`TEST_RABBITMQ_API`, default
/// `http://127.0.0.1:15672`, user guest): fast, and needs no root, unlike `rabbitmqctl`.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
    host: String,
    api: String,
}

impl TestVhost {
    pub async fn create() -> Self {
        let api = std::env::var("TEST_RABBITMQ_API").unwrap_or_else(|_| DEFAULT_API.into());
        let name = unique_name("test");
        let client = reqwest::Client::new();
        let put = |url: String, body: serde_json::Value| {
            let client = client.clone();
            async move {
                let response = client
                    .put(&url)
                    .basic_auth("guest", Some("guest"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap_or_else(|e| {
                        panic!("RabbitMQ management API unreachable at {url}: {e} (is rabbitmq_management enabled?)")
                    });
                assert!(
                    response.status().is_success(),
                    "PUT {url}: {}",
                    response.status()
                );
            }
        };
        put(format!("{api}/api/vhosts/{name}"), serde_json::json!({})).await;
        put(
            format!("{api}/api/permissions/{name}/guest"),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await;
        let host = std::env::var("TEST_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1:5672".into());
        Self { name, host, api }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@host/vhost`, through `host` instead of the broker's own address
    /// when given (a proxy).
    pub fn url_via(&self, host: &str) -> String {
        format!("amqp://guest:guest@{host}/{}?heartbeat=5", self.name)
    }

    pub fn url(&self) -> String {
        self.url_via(&self.host)
    }

    /// `host:port` of the broker itself.
    pub fn broker_host(&self) -> &str {
        &self.host
    }

    /// Messages ready in `queue` right now (a passive declare; the management statistics lag
    /// by seconds). `None` when the queue does not exist.
    pub async fn queue_depth(&self, queue: &str) -> Option<u32> {
        let connection = self.connect().await;
        let channel = connection.open_channel(None).await.ok()?;
        let declare = QueueDeclareArguments::new(queue).passive(true).finish();
        let depth = channel
            .queue_declare(declare)
            .await
            .ok()?
            .map(|(_, n, _)| n);
        let _ = connection.close().await;
        depth
    }

    /// A plain amqprs connection to this vhost, for a test's own checks.
    pub async fn connect(&self) -> Connection {
        let (host, port) = self.host.rsplit_once(':').expect("host:port");
        let args =
            OpenConnectionArguments::new(host, port.parse().expect("port"), "guest", "guest")
                .virtual_host(&self.name)
                .finish();
        Connection::open(&args).await.expect("connect to RabbitMQ")
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let url = format!("{}/api/vhosts/{}", self.api, self.name);
        block_on_side_thread(async move {
            let _ = reqwest::Client::new()
                .delete(&url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await;
        });
    }
}
