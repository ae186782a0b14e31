use std::process::Command;

use amqprs::channel::QueueDeclareArguments;
use amqprs::connection::{Connection, OpenConnectionArguments};

use crate::unique_name;

/// A RabbitMQ virtual host of its own for one test, deleted (with its queues) on drop.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
    host: String,
}

impl TestVhost {
    pub fn create() -> Self {
        let name = unique_name("test");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        let host = std::env::var("TEST_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1:5672".into());
        Self { name, host }
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

    /// Messages ready in `queue` right now (a passive declare; `rabbitmqctl list_queues`
    /// lags by seconds). `None` when the queue does not exist.
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
        let _ = Command::new(program())
            .args(["delete_vhost", &self.name])
            .output();
    }
}

fn program() -> String {
    std::env::var("RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into())
}

fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new(program())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl: {e}"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
