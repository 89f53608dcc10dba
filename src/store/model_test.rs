//! A model-based test of the store: random sequences of puts, commits,
//! ref deletions, gc, clean reopens and crashes, with faults injected at
//! any pack write (a full disk, or the process dying mid-write), checked
//! after every step against a simple in-memory model: every ref holds
//! what its last successful commit gave it, and every object a ref names
//! reads back whole. RocksDB's own writes are not faulted (its recovery
//! is its own); the state log and the index batches are.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use proptest::prelude::*;

use super::pack::fault::{self, Fault};
use super::*;

/// The objects the test stores: a fixed pool, of both kinds and of sizes
/// from a few bytes to a few hundred KiB (some compress, some do not).
fn pool() -> Vec<(Kind, Vec<u8>)> {
    (0..12u64)
        .map(|i| {
            let kind = if i % 3 == 0 { Kind::Meta } else { Kind::Chunk };
            let len = [7, 300, 4_000, 90_000, 250_000][i as usize % 5];
            let data = if i % 2 == 0 {
                crate::noise(len, i)
            } else {
                vec![i as u8; len]
            };
            (kind, data)
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    /// Puts the pool's objects and commits ref `r` naming them.
    Commit(u8, Vec<u8>),
    /// Puts objects without a commit point (an operation that stops).
    Put(Vec<u8>),
    DeleteRef(u8),
    Gc,
    Reopen,
    Crash,
    /// Arms a fault at the `n`-th pack write from now.
    Fault(u8, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let objs = || proptest::collection::vec(0u8..12, 1..5);
    prop_oneof![
        4 => (0u8..3, objs()).prop_map(|(r, o)| Op::Commit(r, o)),
        1 => objs().prop_map(Op::Put),
        1 => (0u8..3).prop_map(Op::DeleteRef),
        2 => Just(Op::Gc),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        2 => (0u8..6, any::<bool>()).prop_map(|(n, c)| Op::Fault(n, c)),
    ]
}

fn ref_key(r: u8) -> Vec<u8> {
    format!("model\0{r}").into_bytes()
}

fn encode(objs: &[u8]) -> Vec<u8> {
    objs.to_vec()
}

struct Harness {
    dir: tempfile::TempDir,
    store: Option<Store>,
    pool: Vec<(Kind, Vec<u8>)>,
    /// The model: each ref's objects.
    refs: HashMap<u8, Vec<u8>>,
}

impl Harness {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    fn reopen(&mut self, crash: bool) {
        if let Some(s) = self.store.take() {
            if crash {
                s.seal_on_drop.store(false, Ordering::Relaxed);
            }
        }
        fault::disarm();
        self.store = Some(Store::open(self.dir.path(), "model").expect("reopen"));
    }

    fn commit(&self, r: u8, objs: &[u8]) -> Result<()> {
        let s = self.store();
        for &o in objs {
            let (kind, data) = &self.pool[o as usize];
            s.put(*kind, &Id::of(data), data)?;
        }
        let mut b = Batch::default();
        b.put(Space::Refs, ref_key(r), encode(objs));
        s.commit(b)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Commit(r, objs) => {
                if self.commit(*r, objs).is_ok() {
                    self.refs.insert(*r, objs.clone());
                }
            }
            Op::Put(objs) => {
                for &o in objs {
                    let (kind, data) = &self.pool[o as usize];
                    let _ = self.store().put(*kind, &Id::of(data), data);
                }
            }
            Op::DeleteRef(r) => {
                let mut b = Batch::default();
                b.delete(Space::Refs, ref_key(*r));
                if self.store().write(b).is_ok() {
                    self.refs.remove(r);
                }
            }
            Op::Gc => {
                let live: std::collections::HashSet<Id> = self
                    .refs
                    .values()
                    .flatten()
                    .map(|&o| Id::of(&self.pool[o as usize].1))
                    .collect();
                let _ = self.store().gc(&|id| live.contains(id));
            }
            Op::Reopen => self.reopen(false),
            Op::Crash => self.reopen(true),
            Op::Fault(n, crash) => fault::arm(
                u32::from(*n),
                if *crash { Fault::Crash } else { Fault::Fail },
            ),
        }
        // A "dead" process is killed for real before anything is checked.
        if fault::crashed() {
            self.reopen(true);
        }
    }

    /// The store agrees with the model.
    fn check(&self, after: &Op) {
        let s = self.store();
        for r in 0..3u8 {
            let got = s.get_kv(Space::Refs, &ref_key(r)).expect("ref");
            let want = self.refs.get(&r).map(|o| encode(o));
            assert_eq!(got, want, "ref {r} after {after:?}");
            for &o in self.refs.get(&r).into_iter().flatten() {
                let data = &self.pool[o as usize].1;
                let read = s
                    .get(&Id::of(data))
                    .unwrap_or_else(|e| panic!("object {o} of ref {r} after {after:?}: {e}"));
                assert!(read == *data, "object {o} of ref {r} after {after:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_store_keeps_to_its_model_through_faults_and_crashes(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Some(Store::open(dir.path(), "model").unwrap());
        let mut h = Harness { dir, store, pool: pool(), refs: HashMap::new() };
        for op in &ops {
            h.apply(op);
            h.check(op);
        }
        // However it went, a clean reopen finds every pack whole: nothing
        // but debris nothing names.
        h.reopen(false);
        h.check(&Op::Reopen);
        let problems: Vec<_> = h
            .store()
            .verify_packs()
            .unwrap()
            .into_iter()
            .filter(|p| !p.stray)
            .map(|p| format!("{}: {}", p.pack, p.what))
            .collect();
        prop_assert!(problems.is_empty(), "{problems:?}");
        fault::disarm();
    }
}
