//! The API test suite: every test runs against SQLite (a temp file) and against a real
//! PostgreSQL 15 cluster, through the real HTTP server on a loopback port.

/// Generate `<name>::sqlite` and `<name>::postgres` tests from `async fn <name>(Backend)`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::support::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

mod accounts;
mod bad_input;
mod bus;
mod concurrency;
mod conflicts;
mod convergence;
mod projects;
mod regression;
mod support;
mod sync_rules;
