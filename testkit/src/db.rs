//! A fresh PostgreSQL database per test, and polling its tables.

use std::time::Duration;

use tokio_postgres::NoTls;

use crate::{env, unique_ident};

/// Creates database `name` next to the one `admin_url` names; returns the
/// new database's URL.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(admin_url, NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    Ok(match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin_url}/{name}"),
    })
}

/// A new, empty database on the test server; returns its URL.
pub async fn fresh_database() -> String {
    let admin = env::database_url();
    create_database(&admin, &unique_ident("qt"))
        .await
        .unwrap_or_else(|e| {
            panic!("cannot create a test database through {admin} (deploy/services.sh start): {e}")
        })
}

/// A client on `url`, its connection driven in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// The single `bigint` that `sql` returns.
pub async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Polls until `sql` counts at least `want`, or gives up after `within`;
/// returns the last count. Errors (the table not created yet) count as 0.
pub async fn wait_for_count(
    client: &tokio_postgres::Client,
    sql: &str,
    want: i64,
    within: Duration,
) -> i64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = client
            .query_one(sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if n >= want || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
