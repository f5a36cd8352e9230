//! The scratch database every storage test runs against: a fresh database on the test
//! server (`PORTICO_TEST_DATABASE_URL`, any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrated unless asked otherwise, and
//! dropped afterwards whether the test passed or panicked.

#![allow(dead_code)] // Each test file uses what it needs.

use std::future::Future;

use sqlx::{Connection, PgPool};

/// Runs `body` against a fresh, migrated database.
pub async fn with_database<F, Fut>(body: F)
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_database_migrated(true, body).await;
}

/// Runs `body` against a fresh database, migrated when `migrate`.
pub async fn with_database_migrated<F, Fut>(migrate: bool, body: F)
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let server = std::env::var("PORTICO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin_options = portico_storage::parse_url(&server).expect("server url");
    let name = format!("portico_storage_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect_with(&admin_options)
        .await
        .expect("connect to the test server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(admin_options.clone().database(&name))
        .await
        .expect("connect to the test database");
    if migrate {
        portico_storage::MIGRATOR.run(&pool).await.expect("migrate");
    }
    let outcome = tokio::spawn(body(pool.clone())).await;
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop database");
    admin.close().await.ok();
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}
