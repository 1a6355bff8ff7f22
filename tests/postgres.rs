//! Issue 17's ground: every PostgreSQL test gets a database of its own on a real server,
//! the machine's own where one answers and a throwaway one started here where not (a
//! newcomer's laptop).

#[path = "support/postgres.rs"]
mod postgres_support;

use postgres_support::{PgServer, TestDb};

fn count_databases(url: &str, name: &str) -> i64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    c.query_one(
        "SELECT COUNT(*) FROM pg_database WHERE datname = $1",
        &[&name],
    )
    .expect("count")
    .get(0)
}

#[test]
fn each_test_gets_a_database_of_its_own_and_it_is_dropped_after() {
    let Some(a) = TestDb::new().expect("postgres") else {
        return;
    };
    let b = TestDb::new().expect("postgres").expect("the same server");
    assert_ne!(a.name, b.name);
    let mut ca = postgres::Client::connect(&a.url(), postgres::NoTls).expect("connect a");
    ca.batch_execute("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (7)")
        .expect("write a");
    let mut cb = postgres::Client::connect(&b.url(), postgres::NoTls).expect("connect b");
    let seen: i64 = cb
        .query_one(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't'",
            &[],
        )
        .expect("look in b")
        .get(0);
    assert_eq!(seen, 0, "a's table is not in b");
    let name = a.name.clone();
    let admin = b.url().replace(&b.name, "postgres");
    assert_eq!(count_databases(&admin, &name), 1);
    // Dropped with the value, though a connection to it is still open.
    drop(a);
    assert_eq!(count_databases(&admin, &name), 0);
    drop(ca);
}

/// Where no server answers, the tests start their own: proved here by starting one
/// whether or not the machine has a server.
#[test]
fn a_throwaway_server_starts_where_none_runs() {
    let Some(own) = PgServer::start_own().expect("start postgres") else {
        return;
    };
    let mut c = postgres::Client::connect(&own.url("postgres"), postgres::NoTls).expect("connect");
    let port: String = c.query_one("SHOW port", &[]).expect("port").get(0);
    assert!(
        own.url("x").contains(&format!(":{port}/")),
        "{}",
        own.url("x")
    );
    assert_ne!(port, "5432", "its own port, not the machine's server");
    let listen: String = c
        .query_one("SHOW listen_addresses", &[])
        .expect("listen")
        .get(0);
    assert_eq!(listen, "127.0.0.1");
}
