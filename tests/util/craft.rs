//! A small, independent encoder of dot's formats (docs/design.md), for
//! writing remotes the way a hostile one would: every object with a correct
//! id, in correct packs and index files, but saying whatever a test wants.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub type Id = [u8; 32];

pub fn id_of(bytes: &[u8]) -> Id {
    *blake3::hash(bytes).as_bytes()
}

pub fn hex(id: &Id) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// An encoded object: its raw bytes and whether it is a chunk.
#[derive(Clone)]
pub struct Obj {
    pub raw: Vec<u8>,
    pub chunk: bool,
}

impl Obj {
    pub fn id(&self) -> Id {
        id_of(&self.raw)
    }
}

#[derive(Default)]
pub struct W(pub Vec<u8>);

impl W {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    pub fn ivarint(&mut self, v: i64) -> &mut Self {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}

pub fn chunk(data: &[u8]) -> Obj {
    Obj {
        raw: data.to_vec(),
        chunk: true,
    }
}

fn meta(raw: Vec<u8>) -> Obj {
    Obj { raw, chunk: false }
}

/// A chunk-tree child: a chunk leaf, a zero run, or an inner child.
pub enum Child {
    Chunk(Id, u64),
    Zero(u64),
    Node(Id, u64),
}

pub fn node(level: u8, children: &[Child]) -> Obj {
    let mut w = W::default();
    w.raw(b"dn\x01").u8(level).varint(children.len() as u64);
    for c in children {
        match c {
            Child::Chunk(id, n) => {
                w.u8(1).raw(id).varint(*n);
            }
            Child::Zero(n) => {
                w.u8(2).varint(*n);
            }
            Child::Node(id, n) => {
                w.raw(id).varint(*n);
            }
        }
    }
    meta(w.0)
}

/// What a file entry points at.
pub enum Content {
    Empty,
    Chunk(Id),
    Zero,
    Node(Id),
}

pub enum Kind {
    File(Content),
    Dir(Id),
    Symlink(Vec<u8>),
    Fifo,
    Char(u64),
    Block(u64),
    /// Any kind byte and raw content bytes.
    Raw(u8, Vec<u8>),
}

pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub fn new(name: &[u8], kind: Kind) -> Entry {
        let (mode, size) = match &kind {
            Kind::Dir(_) => (0o755, 0),
            Kind::Symlink(t) => (0o777, t.len() as u64),
            _ => (0o644, 0),
        };
        Entry {
            name: name.to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000_000_000_000,
            size,
            xattrs: vec![],
        }
    }
    pub fn file(name: &str, content: Content, size: u64) -> Entry {
        let mut e = Entry::new(name.as_bytes(), Kind::File(content));
        e.size = size;
        e
    }
    pub fn dir(name: &str, tree: &Obj) -> Entry {
        Entry::new(name.as_bytes(), Kind::Dir(tree.id()))
    }
    pub fn mode(mut self, mode: u64) -> Entry {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn xattr(mut self, k: &str, v: &str) -> Entry {
        self.xattrs
            .push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
        self
    }

    fn encode(&self, w: &mut W) {
        let kind = match &self.kind {
            Kind::File(_) => 0,
            Kind::Dir(_) => 1,
            Kind::Symlink(_) => 2,
            Kind::Fifo => 3,
            Kind::Char(_) => 4,
            Kind::Block(_) => 5,
            Kind::Raw(k, _) => *k,
        };
        w.bytes(&self.name)
            .u8(kind)
            .varint(self.mode)
            .varint(self.uid)
            .varint(self.gid)
            .ivarint(self.mtime)
            .varint(self.size);
        match &self.kind {
            Kind::File(Content::Empty) => {
                w.u8(0);
            }
            Kind::File(Content::Chunk(id)) => {
                w.u8(1).raw(id);
            }
            Kind::File(Content::Zero) => {
                w.u8(2);
            }
            Kind::File(Content::Node(id)) => {
                w.u8(3).raw(id);
            }
            Kind::Dir(id) => {
                w.raw(id);
            }
            Kind::Symlink(t) => {
                w.bytes(t);
            }
            Kind::Fifo => {}
            Kind::Char(r) | Kind::Block(r) => {
                w.varint(*r);
            }
            Kind::Raw(_, b) => {
                w.raw(b);
            }
        }
        w.varint(self.xattrs.len() as u64);
        for (k, v) in &self.xattrs {
            w.bytes(k).bytes(v);
        }
    }
}

/// A one-node directory, entries in the order given.
pub fn dir(entries: &[Entry]) -> Obj {
    let mut w = W::default();
    w.raw(b"dt\x01").u8(0).varint(entries.len() as u64);
    for e in entries {
        e.encode(&mut w);
    }
    meta(w.0)
}

/// An inner directory node: (first name, child, entry count) records.
pub fn dir_inner(level: u8, children: &[(&[u8], Id, u64)]) -> Obj {
    let mut w = W::default();
    w.raw(b"dt\x01").u8(level).varint(children.len() as u64);
    for (first, id, count) in children {
        w.bytes(first).raw(id).varint(*count);
    }
    meta(w.0)
}

/// A root of (subdot name bytes, tree) with top mode 0755.
pub fn root(subdots: &[(&[u8], &Obj)]) -> Obj {
    let mut w = W::default();
    w.raw(b"dr\x01").varint(subdots.len() as u64);
    for (name, tree) in subdots {
        w.bytes(name)
            .raw(&tree.id())
            .varint(0o755)
            .varint(0)
            .varint(0)
            .ivarint(1_600_000_000_000_000_000);
    }
    meta(w.0)
}

pub fn commit(root: &Obj, parents: &[Id]) -> Obj {
    let mut w = W::default();
    w.raw(b"dc\x01")
        .raw(&root.id())
        .varint(parents.len() as u64);
    for p in parents {
        w.raw(p);
    }
    w.bytes(b"Mallory")
        .bytes(b"mallory@example.com")
        .ivarint(1_600_000_000)
        .ivarint(0)
        .bytes(b"nothing to see")
        .varint(0);
    meta(w.0)
}

/// Where one object is said to be, as an index file says it.
#[derive(Clone, Copy)]
pub struct Slot {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: u8,
}

/// A remote directory being written.
pub struct Remote {
    pub dir: PathBuf,
}

impl Remote {
    pub fn new(dir: &Path) -> Remote {
        for sub in ["packs", "index", "refs"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Remote {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes `objects` as packs (chunks and metadata apart, stored raw)
    /// and one index file naming them all; `tweak` may change what the
    /// index says about each object.
    pub fn publish_with(&self, objects: &[Obj], tweak: &dyn Fn(&Id, &mut Slot)) {
        let mut entries = Vec::new();
        for chunks in [true, false] {
            let objs: Vec<&Obj> = objects.iter().filter(|o| o.chunk == chunks).collect();
            if objs.is_empty() {
                continue;
            }
            let stored: Vec<(Id, u8, u32, Vec<u8>)> = objs
                .iter()
                .map(|o| (o.id(), 0u8, o.raw.len() as u32, o.raw.clone()))
                .collect();
            let (pack, slots) = pack(if chunks { 0 } else { 1 }, &stored);
            let pack_id = id_of(&pack);
            std::fs::write(
                self.dir.join(format!("packs/{}.pack", hex(&pack_id))),
                &pack,
            )
            .unwrap();
            for (id, slot) in slots {
                entries.push((id, pack_id, slot, if chunks { 0u8 } else { 1 }));
            }
        }
        self.index(&entries, tweak);
    }

    pub fn publish(&self, objects: &[Obj]) {
        self.publish_with(objects, &|_, _| {})
    }

    /// Writes a pack of already-stored records (any codec) and indexes it.
    pub fn publish_stored(&self, kind: u8, records: &[(Id, u8, u32, Vec<u8>)]) {
        let (pack, slots) = pack(kind, records);
        let pack_id = id_of(&pack);
        std::fs::write(
            self.dir.join(format!("packs/{}.pack", hex(&pack_id))),
            &pack,
        )
        .unwrap();
        let entries: Vec<_> = slots
            .into_iter()
            .map(|(id, s)| (id, pack_id, s, kind))
            .collect();
        self.index(&entries, &|_, _| {});
    }

    fn index(&self, entries: &[(Id, Id, Slot, u8)], tweak: &dyn Fn(&Id, &mut Slot)) {
        let mut entries = entries.to_vec();
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        let mut packs: Vec<Id> = entries.iter().map(|e| e.1).collect();
        packs.sort();
        packs.dedup();
        let mut w = W::default();
        w.raw(b"DOTRIDX\0")
            .raw(&1u32.to_le_bytes())
            .raw(&(packs.len() as u32).to_le_bytes());
        for p in &packs {
            w.raw(p);
        }
        w.raw(&(entries.len() as u32).to_le_bytes());
        for (id, pack, slot, kind) in &entries {
            let mut slot = *slot;
            tweak(id, &mut slot);
            let n = packs.binary_search(pack).unwrap() as u32;
            w.raw(id)
                .raw(&n.to_le_bytes())
                .raw(&slot.offset.to_le_bytes())
                .raw(&slot.stored_len.to_le_bytes())
                .raw(&slot.raw_len.to_le_bytes())
                .u8(slot.codec)
                .u8(*kind);
        }
        let idx = w.0;
        std::fs::write(
            self.dir.join(format!("index/{}.idx", hex(&id_of(&idx)))),
            &idx,
        )
        .unwrap();
    }

    /// Sets generation `generation` of a branch to `commit`.
    pub fn set_ref(&self, dot: &str, branch: &str, generation: u64, commit: &Id) {
        let dir = self.dir.join(format!("refs/{dot}/{branch}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("{generation:020}")),
            format!(
                "dot ref 1\ncommit {}\nchunking 16384 65536 262144\n",
                hex(commit)
            ),
        )
        .unwrap();
    }
}

/// A sealed pack of `kind` holding the given records (id, codec, raw
/// length, stored bytes), and each record's slot.
pub fn pack(kind: u8, records: &[(Id, u8, u32, Vec<u8>)]) -> (Vec<u8>, Vec<(Id, Slot)>) {
    let mut out = b"DOTPACK\0".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    let mut slots = Vec::new();
    for (id, codec, raw_len, stored) in records {
        out.extend_from_slice(id);
        out.push(*codec);
        out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        out.extend_from_slice(&raw_len.to_le_bytes());
        let slot = Slot {
            offset: out.len() as u64,
            stored_len: stored.len() as u32,
            raw_len: *raw_len,
            codec: *codec,
        };
        out.extend_from_slice(stored);
        slots.push((*id, slot));
    }
    let trailer_at = out.len() as u64;
    let mut trailer = (slots.len() as u32).to_le_bytes().to_vec();
    for (id, s) in &slots {
        trailer.extend_from_slice(id);
        trailer.extend_from_slice(&s.offset.to_le_bytes());
        trailer.extend_from_slice(&s.stored_len.to_le_bytes());
        trailer.extend_from_slice(&s.raw_len.to_le_bytes());
        trailer.push(s.codec);
    }
    out.extend_from_slice(&trailer);
    out.extend_from_slice(&trailer_at.to_le_bytes());
    out.extend_from_slice(blake3::hash(&trailer).as_bytes());
    out.extend_from_slice(b"DOTPEND\0");
    (out, slots)
}
