//! MariaDB helpers: the URL of the test server and a connection to run SQL with.
#![allow(dead_code)]

use mysql_async::prelude::Queryable;

pub fn url() -> String {
    std::env::var("CDC_BRIDGE_MYSQL_URL")
        .expect("CDC_BRIDGE_MYSQL_URL is not set: run the tests with scripts/test.sh")
}

pub async fn connect() -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_async::Opts::from_url(&url()).unwrap())
        .await
        .expect("connect to MariaDB")
}

pub async fn sql(conn: &mut mysql_async::Conn, statements: &str) {
    conn.query_drop(statements)
        .await
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
}
