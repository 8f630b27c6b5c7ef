//! The primitive encodings every record payload is built from
//! (`docs/record-format.md`): little-endian integers, length-prefixed byte
//! strings, a flag byte before optional fields.

use super::{DecodeError, IdemTag};
use crate::Timestamp;

pub(super) struct Writer<'o>(pub(super) &'o mut Vec<u8>);

impl Writer<'_> {
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn bytes(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).expect("record field over 4 GiB");
        self.u32(len);
        self.0.extend_from_slice(v);
    }
    pub(super) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    pub(super) fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
        }
    }
    pub(super) fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.0.push(0),
            Some(x) => {
                self.0.push(1);
                self.u64(x);
            }
        }
    }
    pub(super) fn opt_time(&mut self, v: Option<Timestamp>) {
        self.opt_u64(v.map(|t| t.0));
    }
    pub(super) fn strs<'s>(&mut self, items: impl ExactSizeIterator<Item = &'s str>) {
        self.u32(u32::try_from(items.len()).expect("list over 4G entries"));
        for item in items {
            self.str(item);
        }
    }
    /// `opt<list<str>>`.
    pub(super) fn opt_strs(&mut self, items: Option<&[&str]>) {
        match items {
            None => self.0.push(0),
            Some(list) => {
                self.0.push(1);
                self.strs(list.iter().copied());
            }
        }
    }
    /// The high 64 bits of a reservation id, written last and only when
    /// not zero (see `ReservationId`).
    pub(super) fn reservation_high(&mut self, id: u128) {
        let high = (id >> 64) as u64;
        if high != 0 {
            self.u64(high);
        }
    }

    pub(super) fn idem(&mut self, v: &Option<IdemTag<'_>>) {
        match v {
            None => self.0.push(0),
            Some(tag) => {
                self.0.push(1);
                self.str(tag.key);
                self.u128(tag.fingerprint);
            }
        }
    }
}

pub(super) struct Reader<'a> {
    /// What is left to read.
    pub(super) bytes: &'a [u8],
    /// The record's type byte, for errors.
    pub(super) kind: u8,
}

impl<'a> Reader<'a> {
    pub(super) fn error(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            kind: self.kind,
            reason,
        }
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(self.error("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.error("bad flag byte")),
        }
    }
    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    pub(super) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| self.error("string is not UTF-8"))
    }
    pub(super) fn opt_str(&mut self) -> Result<Option<&'a str>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    pub(super) fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    pub(super) fn opt_time(&mut self) -> Result<Option<Timestamp>, DecodeError> {
        Ok(self.opt_u64()?.map(Timestamp))
    }
    pub(super) fn strs(&mut self) -> Result<Vec<&'a str>, DecodeError> {
        let count = self.u32()? as usize;
        // Each string costs at least its 4-byte length: bound the allocation
        // by what the payload can actually hold.
        if count > self.bytes.len() / 4 {
            return Err(self.error("list longer than its payload"));
        }
        (0..count).map(|_| self.str()).collect()
    }
    /// `opt<list<str>>`.
    pub(super) fn opt_strs(&mut self) -> Result<Option<Vec<&'a str>>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.strs()?)
        } else {
            None
        })
    }
    /// A reservation id from its low 64 bits and, when the payload goes
    /// on, the high 64 bits that follow everything else.
    pub(super) fn reservation_high(&mut self, low: u64) -> Result<u128, DecodeError> {
        let high = if self.bytes.is_empty() {
            0
        } else {
            match self.u64()? {
                // Written only when not zero: one encoding per record.
                0 => return Err(self.error("a zero high half written out")),
                high => high,
            }
        };
        Ok(u128::from(high) << 64 | u128::from(low))
    }

    pub(super) fn idem(&mut self) -> Result<Option<IdemTag<'a>>, DecodeError> {
        if !self.flag()? {
            return Ok(None);
        }
        Ok(Some(IdemTag {
            key: self.str()?,
            fingerprint: self.u128()?,
        }))
    }
}
