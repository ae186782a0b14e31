use amqprs::channel::QueueDeclareArguments;
use amqprs::connection::{Connection, OpenConnectionArguments};

use crate::rabbit::{self, RabbitCluster};
use crate::{block_on_side_thread, unique_name};

const DEFAULT_API: &str = "http://127.0.0.1:15672";

/// A RabbitMQ virtual host of its own for one test, deleted (with its queues) on drop.
///
/// On the machine's broker ([`TestVhost::create`]) it is made through the management HTTP
/// API (`TEST_RABBITMQ_API`, default `http://127.0.0.1:15672`, user guest): fast, and needs
/// no root, unlike `rabbitmqctl`. On the local three-node cluster
/// ([`TestVhost::on_cluster`]), which runs no management plugin, through `rabbitmqctl`.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
    /// `host:port` of each node; the first is the machine's broker, or node 1.
    hosts: Vec<String>,
    made_by: Admin,
}

/// How the vhost was made, and so is deleted.
#[derive(Debug)]
enum Admin {
    Api(String),
    Cluster,
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
        Self {
            name,
            hosts: vec![host],
            made_by: Admin::Api(api),
        }
    }

    /// A vhost on the local RabbitMQ cluster (started with [`RabbitCluster::take`]), with
    /// every permission for guest.
    pub async fn on_cluster() -> Self {
        let name = unique_name("test");
        for args in [
            vec!["add_vhost", name.as_str()],
            vec![
                "set_permissions",
                "-p",
                name.as_str(),
                "guest",
                ".*",
                ".*",
                ".*",
            ],
        ] {
            if let Err(e) = rabbit::ctl(&args).await {
                panic!("rabbitmqctl {args:?} on the cluster: {e}");
            }
        }
        Self {
            name,
            hosts: rabbit::NODES.into_iter().map(RabbitCluster::host).collect(),
            made_by: Admin::Cluster,
        }
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
        self.url_via(&self.hosts[0])
    }

    /// Every node's URL, comma-separated (`RABBITMQ_URLS`); one URL on the machine's broker.
    pub fn urls(&self) -> String {
        self.urls_via(&self.hosts)
    }

    /// The URLs through `hosts` (a proxy per node), comma-separated.
    pub fn urls_via(&self, hosts: &[String]) -> String {
        hosts
            .iter()
            .map(|host| self.url_via(host))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `host:port` of the broker itself (node 1 on the cluster).
    pub fn broker_host(&self) -> &str {
        &self.hosts[0]
    }

    /// `host:port` of every node.
    pub fn broker_hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Whether the vhost is on the local cluster.
    pub fn on_the_cluster(&self) -> bool {
        matches!(self.made_by, Admin::Cluster)
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

    /// A plain amqprs connection to this vhost, for a test's own checks: to the first node
    /// that answers.
    pub async fn connect(&self) -> Connection {
        let mut failures = Vec::new();
        for host in &self.hosts {
            let (address, port) = host.rsplit_once(':').expect("host:port");
            let args = OpenConnectionArguments::new(
                address,
                port.parse().expect("port"),
                "guest",
                "guest",
            )
            .virtual_host(&self.name)
            .finish();
            match Connection::open(&args).await {
                Ok(connection) => return connection,
                Err(e) => failures.push(format!("{host}: {e}")),
            }
        }
        panic!("connect to RabbitMQ: {failures:?}");
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let api = match &self.made_by {
            Admin::Api(api) => api,
            Admin::Cluster => {
                // Any node will do (the script picks a running one).
                rabbit::ctl_blocking(&["delete_vhost", &self.name]);
                return;
            }
        };
        let url = format!("{api}/api/vhosts/{}", self.name);
        block_on_side_thread(async move {
            let _ = reqwest::Client::new()
                .delete(&url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await;
        });
    }
}
