//! A fresh PostgreSQL database per test, and polling its tables.

use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::{env, unique_ident};

/// Creates database `name` next to the one `admin_url` names; returns the
/// new database's URL.
///
/// A server that is starting, recovering or briefly out of connection slots
/// is waited for (up to 30 s) rather than failing every test at once; any
/// other error is returned at the first try.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, tokio_postgres::Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match try_create_database(admin_url, name).await {
            Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                eprintln!("create database {name}: {}; retrying", describe(&e));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
            Ok(()) => break,
        }
    }
    Ok(match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin_url}/{name}"),
    })
}

async fn try_create_database(admin_url: &str, name: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(admin_url, NoTls).await?;
    tokio::spawn(conn);
    match client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
    {
        // A retry after a reply lost with its connection: the first try
        // created it.
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        other => other,
    }
}

/// Errors worth another try: the server was unreachable or dropped the
/// connection, is starting up or recovering (57P03), is out of connection
/// slots (53300), or the template was busy (55006).
fn transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::OBJECT_IN_USE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
        ]
        .contains(code),
        // No SQLSTATE: an I/O or protocol failure of the connection.
        None => true,
    }
}

/// The server's own words, which `Display` of a tokio-postgres error leaves
/// out ("db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// A new, empty database on the test server; returns its URL.
pub async fn fresh_database() -> String {
    let admin = env::database_url();
    create_database(&admin, &unique_ident("qt"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a test database through {admin} (deploy/services.sh start): {}",
                describe(&e)
            )
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
