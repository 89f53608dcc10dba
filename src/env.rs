//! The environment a command runs in, as a value: the variables dot reads
//! (author, credentials, regions, tuning), captured by the process the
//! user started. In-process the library reads them from here; through the
//! daemon the client sends them with each request, so a command behaves
//! the same wherever it runs, and the library never reads its own
//! process's environment.

use std::collections::BTreeMap;

/// Variables dot reads: the author, S3 and HTTP credentials and region,
/// the credentials file, and the push pack size.
const NAMES: &[&str] = &[
    "USER",
    "DOT_AUTHOR_NAME",
    "DOT_AUTHOR_EMAIL",
    "DOT_CREDENTIALS",
    "DOT_PUSH_PACK_BYTES",
    "DOT_HTTP_USER",
    "DOT_HTTP_PASSWORD",
    "DOT_HTTP_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    // The Docker Engine API that lists, stops and starts the containers
    // using a dot.
    "DOCKER_HOST",
    // Test hooks, honoured by debug builds only: pause a commit after its
    // scan (a mounted one: after its freeze, before it builds what showed
    // then),
    // so tests can act while it runs; make it panic, as a bug would; pause
    // a mounted commit after its commit point, before it empties the
    // overlay.
    "DOT_TEST_COMMIT_PAUSE_MS",
    "DOT_TEST_COMMIT_PANIC",
    "DOT_TEST_REBASE_PAUSE_MS",
];

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientEnv(BTreeMap<String, String>);

impl ClientEnv {
    /// In debug builds, sleeps for the milliseconds the test hook `var`
    /// says: how tests act at a given point of a running command.
    pub(crate) fn test_pause(&self, var: &str) {
        if cfg!(debug_assertions) {
            if let Some(ms) = self.get(var).and_then(|v| v.parse().ok()) {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
    }

    /// This process's values of the variables dot reads.
    pub fn capture() -> ClientEnv {
        ClientEnv(
            NAMES
                .iter()
                .filter_map(|n| Some((n.to_string(), std::env::var(n).ok()?)))
                .collect(),
        )
    }

    /// A variable's value; an empty one counts as unset.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An environment of the given variables (tests).
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> ClientEnv {
        ClientEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}
