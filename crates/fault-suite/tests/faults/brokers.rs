//! The broker as a cluster: the local three-node RabbitMQ cluster
//! (`deploy/local/rabbitmq-cluster.sh`), a vhost of the test's own on it, and write-api and
//! the replicator given every node in `RABBITMQ_URLS`, each node behind a proxy of its own.
//! The work queues are quorum queues with a member on every node. Under the steady write
//! load a node fails:
//!
//! - r1: the node leading `products.sync` is killed (`kill -9`); it is started again after.
//! - r2: the node leading `products.sync` is stopped gracefully and started again, twice
//!   (the second time the leader may be another node).
//! - r3: the links from the services to the nodes they are connected to (one or two, never
//!   all three) freeze for 20 s: connections stay open and nothing is answered, as with a
//!   frozen host or a silent firewall. The nodes themselves run on and see each other.
//! - r4: the same links are cut for 10 s: open connections are reset and new ones closed
//!   at once.
//!
//! Each prints how long after the fault (the node gone, the links frozen or cut) events flow
//! again: a product written then is on every replica. Writes never need the broker, so none
//! may fail; then the usual end checks: every acknowledged write on the primary and on every
//! replica (`replicator verify` clean), nothing dead-lettered.
//!
//! The scenarios take turns on the cluster ([`RabbitCluster::take`]), and each turn begins
//! with the cluster whole again.

use std::time::{Duration, Instant};

use diesel::sql_types::Uuid as SqlUuid;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use test_support::stack::{Stack, StackOptions};
use test_support::{LinkMode, RabbitCluster, eventually};
use tokio::time::sleep;

use crate::{Load, finish, steady};

const SYNC_QUEUE: &str = "products.sync";
const DELETE_QUEUE: &str = "products.delete";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_queue_leader_node_killed_under_writes() {
    let cluster = RabbitCluster::take().await;
    let stack = cluster_stack().await;
    let load = Load::start(&stack);
    steady(3).await;
    let node = leader(&cluster, &stack, SYNC_QUEUE).await;
    let led = if cluster.leader(stack.vhost.name(), DELETE_QUEUE).await == Some(node) {
        "both queues"
    } else {
        SYNC_QUEUE
    };
    let mut watch = Watch::new(&stack).await;
    let fault = Instant::now();
    cluster.kill(node).await;
    let flow = watch.flow_again(&stack, fault).await;
    steady(3).await;
    cluster.start(node).await;
    steady(2).await;
    conclude(
        &format!(
            "r1 node {node} (leading {led}) kill -9, events flow again {} after",
            seconds(flow)
        ),
        &stack,
        load,
        &watch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_leader_node_stopped_and_restarted_twice_under_writes() {
    let cluster = RabbitCluster::take().await;
    let stack = cluster_stack().await;
    let load = Load::start(&stack);
    steady(3).await;
    let mut watch = Watch::new(&stack).await;
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let node = leader(&cluster, &stack, SYNC_QUEUE).await;
        let stopping = Instant::now();
        cluster.stop(node).await;
        let stopped = stopping.elapsed();
        let fault = Instant::now();
        let flow = watch.flow_again(&stack, fault).await;
        rounds.push(format!(
            "node {node} stopped in {}, events flow again {} after",
            seconds(stopped),
            seconds(flow)
        ));
        steady(2).await;
        cluster.start(node).await;
        steady(2).await;
    }
    conclude(
        &format!("r2 leader stop/start twice: {}", rounds.join("; ")),
        &stack,
        load,
        &watch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_links_to_nodes_frozen_for_20_seconds_under_writes() {
    links_fail(LinkMode::Frozen, Duration::from_secs(20), "r3", "frozen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_links_to_nodes_cut_for_10_seconds_under_writes() {
    links_fail(LinkMode::Cut, Duration::from_secs(10), "r4", "cut").await;
}

/// Breaks the links to the nodes the services use for `outage`, then opens them again.
async fn links_fail(mode: LinkMode, outage: Duration, name: &str, verb: &str) {
    // No node is touched, but the turn keeps the others' node failures out of the figures.
    let _cluster = RabbitCluster::take().await;
    let stack = cluster_stack().await;
    let load = Load::start(&stack);
    steady(3).await;
    let nodes = used_nodes(&stack);
    let mut watch = Watch::new(&stack).await;
    let fault = Instant::now();
    for &n in &nodes {
        stack.node_proxies[n - 1].set(mode);
    }
    let (flow, ()) = tokio::join!(watch.flow_again(&stack, fault), async {
        sleep(outage.saturating_sub(fault.elapsed())).await;
        for &n in &nodes {
            stack.node_proxies[n - 1].set(LinkMode::Open);
        }
    });
    steady(3).await;
    let nodes: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    conclude(
        &format!(
            "{name} links to node {} {verb} {} s, events flow again {} after",
            nodes.join(" and "),
            outage.as_secs(),
            seconds(flow)
        ),
        &stack,
        load,
        &watch,
    )
    .await;
}

/// Stops the load and checks the end state: the probes count among the acknowledged
/// writes, and no write was ambiguous (writes never wait on the broker).
async fn conclude(scenario: &str, stack: &Stack, load: Load, watch: &Watch) {
    let (mut writes, _) = load.stop().await;
    writes.acknowledged += watch.probes;
    assert_eq!(
        writes.ambiguous(),
        0,
        "writes never need the broker: {writes:?}"
    );
    finish(scenario, stack, &writes, None, 0).await;
}

/// A stack on a vhost of the cluster, every node in the services' `RABBITMQ_URLS`.
async fn cluster_stack() -> Stack {
    Stack::start(StackOptions {
        broker_cluster: true,
        ..StackOptions::default()
    })
    .await
}

/// The node (1..3) leading `queue` of the stack's vhost, once the services declared it.
async fn leader(cluster: &RabbitCluster, stack: &Stack, queue: &str) -> usize {
    eventually(
        Duration::from_secs(60),
        &format!("a leader of {queue}"),
        async || cluster.leader(stack.vhost.name(), queue).await,
    )
    .await
}

/// The nodes (1..3) the services have connections to, the busiest first: one or two, never
/// all three, so that there is always a node left to move to.
fn used_nodes(stack: &Stack) -> Vec<usize> {
    let mut links: Vec<(usize, usize)> = stack
        .node_proxies
        .iter()
        .enumerate()
        .map(|(index, proxy)| (proxy.links(), index + 1))
        .filter(|(links, _)| *links > 0)
        .collect();
    assert!(!links.is_empty(), "the services hold no broker connection");
    links.sort_by(|a, b| b.cmp(a));
    links.truncate(2);
    links.into_iter().map(|(_, node)| node).collect()
}

/// Probe writes, and a connection to each replica to look for them.
struct Watch {
    replicas: Vec<AsyncPgConnection>,
    /// Probe writes acknowledged (each one more write the primary holds).
    probes: usize,
}

impl Watch {
    /// Connects before the fault, so that the connection is not part of the measure.
    async fn new(stack: &Stack) -> Self {
        let mut replicas = Vec::new();
        for replica in &stack.replicas {
            replicas.push(replica.connect().await);
        }
        Self {
            replicas,
            probes: 0,
        }
    }

    /// Writes a product and waits until every replica has it: how long after `since`.
    async fn flow_again(&mut self, stack: &Stack, since: Instant) -> Duration {
        let id = uuid::Uuid::now_v7();
        let status = stack
            .client
            .post(format!("{}/api/products", stack.write_url()))
            .json(&json!({"id": id, "name": "flow probe", "price": 1, "stock": 1}))
            .send()
            .await
            .expect("write-api answers")
            .status();
        assert_eq!(status, 201, "a write needs no broker");
        self.probes += 1;
        for replica in &mut self.replicas {
            loop {
                let found = diesel::sql_query("SELECT 1 FROM products WHERE id = $1")
                    .bind::<SqlUuid, _>(id)
                    .execute(replica)
                    .await
                    .unwrap_or(0);
                if found == 1 {
                    break;
                }
                assert!(
                    since.elapsed() < Duration::from_secs(120),
                    "events did not flow again within 120 s"
                );
                sleep(Duration::from_millis(5)).await;
            }
        }
        since.elapsed()
    }
}

/// `1.23 s`, or `45 ms` under a second.
fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}
