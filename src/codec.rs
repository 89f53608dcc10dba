//! The canonical binary encoding shared by every stored format: LEB128
//! varints, length-prefixed byte strings and fixed-width ids, with a reader
//! that never panics on truncated or hostile input.

use crate::id::{Id, ID_LEN};

/// Why bytes could not be decoded; the caller adds which object it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("varint too long at byte {0}")]
    BadVarint(usize),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return self;
            }
            self.buf.push(byte | 0x80);
        }
    }
    /// Signed values are zigzag-encoded so small negatives stay short.
    pub fn ivarint(&mut self, v: i64) -> &mut Self {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
        self
    }
    pub fn id(&mut self, id: &Id) -> &mut Self {
        self.buf.extend_from_slice(&id.0);
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::BadVarint(start));
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                // Canonical: no redundant trailing zero groups.
                if byte == 0 && shift > 0 {
                    return Err(DecodeError::BadVarint(start));
                }
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint(start))
    }
    pub fn ivarint(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    pub fn u32v(&mut self) -> Result<u32, DecodeError> {
        let at = self.pos;
        u32::try_from(self.varint()?)
            .map_err(|_| DecodeError::Invalid(format!("value too large at byte {at}")))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated(self.pos))?;
        self.take(n)
    }
    pub fn id(&mut self) -> Result<Id, DecodeError> {
        Ok(Id::from_slice(self.take(ID_LEN)?).expect("took ID_LEN bytes"))
    }
    pub fn is_done(&self) -> bool {
        self.pos == self.buf.len()
    }
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(DecodeError::Invalid(format!(
                "{} trailing bytes",
                self.buf.len() - self.pos
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(v: u64, s: i64) {
            let mut w = Writer::new();
            w.varint(v).ivarint(s);
            let mut r = Reader::new(&w.buf);
            prop_assert_eq!(r.varint().unwrap(), v);
            prop_assert_eq!(r.ivarint().unwrap(), s);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn reader_never_panics(bytes: Vec<u8>) {
            let mut r = Reader::new(&bytes);
            let _ = r.varint();
            let _ = r.bytes();
            let _ = r.id();
        }
    }

    #[test]
    fn golden_varints() {
        let mut w = Writer::new();
        w.varint(0).varint(127).varint(128).varint(300).ivarint(-1);
        assert_eq!(w.buf, [0x00, 0x7f, 0x80, 0x01, 0xac, 0x02, 0x01]);
    }

    #[test]
    fn non_canonical_varint_rejected() {
        assert!(Reader::new(&[0x80, 0x00]).varint().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
    }
}
