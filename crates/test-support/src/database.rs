use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use crate::{block_on_side_thread, unique_name};

const DEFAULT_ADMIN_URL: &str = "postgres://catalogue:catalogue@127.0.0.1:5432/postgres";

/// A database of its own for one test, dropped (with any open connections) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates an empty database; the code under test migrates it.
    pub async fn create() -> Self {
        let admin_url =
            std::env::var("TEST_PG_ADMIN_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        Self::create_on(&admin_url).await
    }

    /// Creates an empty database on the server `admin_url` logs in to (a
    /// [`PgCluster`](crate::PgCluster)'s, say).
    pub async fn create_on(admin_url: &str) -> Self {
        let admin_url = admin_url.to_owned();
        let name = unique_name("test");
        let mut admin = AsyncPgConnection::establish(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = replace_database(&admin_url, &name);
        Self {
            name,
            url,
            admin_url,
        }
    }

    /// The same database reached by `url` from now on, by the code under test and the test's
    /// own checks: a host list naming the primary and its standby, say. Dropping it still
    /// goes through the server it was created on.
    pub fn reached_by(mut self, url: String) -> Self {
        self.url = url;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `host:port` of the server this database lives on (where a proxy in front of it
    /// forwards to).
    pub fn server(&self) -> String {
        let (host, port) = server_of(&self.url);
        format!("{host}:{port}")
    }

    /// This database's URL with its server replaced by `host` (`host:port`, a proxy's).
    pub fn url_via(&self, host: &str) -> String {
        let authority_start = self.url.find("://").map_or(0, |i| i + 3);
        let at = self.url[authority_start..]
            .find('@')
            .map_or(authority_start, |i| authority_start + i + 1);
        let end = self.url[at..]
            .find(['/', '?'])
            .map_or(self.url.len(), |i| at + i);
        format!("{}{host}{}", &self.url[..at], &self.url[end..])
    }

    /// A connection for the test's own checks.
    pub async fn connect(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        block_on_side_thread(async move {
            if let Ok(mut admin) = AsyncPgConnection::establish(&admin_url).await {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        });
    }
}

/// The host and port of a `postgres://` URL (5432 when it names none).
fn server_of(url: &str) -> (String, u16) {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().expect("a numeric port")),
        None => (host_port.to_owned(), 5432),
    }
}

/// `postgres://host/olddb?x` → `postgres://host/newdb?x`.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_end..]
        .find('/')
        .map_or(base.len(), |i| authority_end + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{replace_database, server_of};

    #[test]
    fn finds_the_server() {
        assert_eq!(
            server_of("postgres://u:p@127.0.0.1:5439/db?x=1"),
            ("127.0.0.1".to_owned(), 5439)
        );
        assert_eq!(server_of("postgres://h/db"), ("h".to_owned(), 5432));
    }

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            replace_database("postgres://u@h:1/postgres", "t"),
            "postgres://u@h:1/t"
        );
        assert_eq!(replace_database("postgres://h", "t"), "postgres://h/t");
        assert_eq!(
            replace_database("postgres://h/x?sslmode=disable", "t"),
            "postgres://h/t?sslmode=disable"
        );
    }
}
