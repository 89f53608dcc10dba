//! Progress reporting: the library reports through this trait and never
//! draws; the CLI turns it into a progress bar when stderr is a terminal.

/// Receives progress of a long operation. Implementations must be cheap:
/// `advance` is called from many threads for every file or chunk.
pub trait Progress: Sync {
    /// Starts a phase of `total` units (bytes) named `what`.
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
    /// A warning to show the user (such as an interrupted operation that
    /// was finished).
    fn note(&self, _text: &str) {}
    /// Whether the operation should stop: the user interrupted it. Long
    /// work checks this between steps that leave the store consistent.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}
