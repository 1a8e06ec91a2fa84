//! The WAL record format: `len u32 | crc32 u32 | payload`, payload = `revision i64 | op u8 | create i64 |
//! key len u32 | key | value len u32 | value` (little-endian). A torn last write is
//! dropped at replay; a damaged record with valid ones after it is reported, never skipped.

use std::sync::Arc;

use crate::store::KeyValue;

pub struct Record {
    pub revision: i64,
    pub key: String,
    pub kv: Option<KeyValue>,
}

pub fn encode(out: &mut Vec<u8>, revision: i64, key: &str, kv: Option<&KeyValue>) {
    let mut p = Vec::with_capacity(32 + key.len() + kv.map_or(0, |k| k.value.len()));
    p.extend_from_slice(&revision.to_le_bytes());
    p.push(if kv.is_some() { 0 } else { 1 });
    p.extend_from_slice(&kv.map_or(0, |k| k.create_revision).to_le_bytes());
    p.extend_from_slice(&(key.len() as u32).to_le_bytes());
    p.extend_from_slice(key.as_bytes());
    let value: &[u8] = kv.map_or(&[], |k| &k.value);
    p.extend_from_slice(&(value.len() as u32).to_le_bytes());
    p.extend_from_slice(value);
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
    out.extend_from_slice(&p);
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Some(h)
}

fn u32_at(b: &mut &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?))
}

fn i64_at(b: &mut &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(take(b, 8)?.try_into().ok()?))
}

fn record(mut p: &[u8]) -> Option<Record> {
    let revision = i64_at(&mut p)?;
    let op = take(&mut p, 1)?[0];
    let create = i64_at(&mut p)?;
    let klen = u32_at(&mut p)? as usize;
    let key = String::from_utf8(take(&mut p, klen)?.to_vec()).ok()?;
    let vlen = u32_at(&mut p)? as usize;
    let value = take(&mut p, vlen)?;
    let kv = (op == 0).then(|| KeyValue {
        key: key.clone(),
        value: Arc::from(value),
        create_revision: create,
        mod_revision: revision,
    });
    Some(Record { revision, key, kv })
}

/// A record in the middle of a segment that cannot be read while valid records follow it: not a torn write (which
/// can only be the last thing written) but damage, and replaying past it would lose acknowledged writes.
#[derive(Debug, PartialEq)]
pub struct Corrupt {
    /// Where the damaged record starts.
    pub offset: usize,
    /// Where the next valid record starts.
    pub next_valid: usize,
}

/// What a segment holds: its records, and how many bytes of a torn last write were dropped.
pub struct Replay {
    pub records: Vec<Record>,
    pub torn: usize,
}

/// The record at the start of `b` and its length in bytes, if a whole valid one is there.
fn record_at(b: &[u8]) -> Option<(Record, usize)> {
    let mut h = b;
    let len = u32_at(&mut h)? as usize;
    let crc = u32_at(&mut h)?;
    let p = take(&mut h, len)?;
    if crc32fast::hash(p) != crc {
        return None;
    }
    Some((record(p)?, 8 + len))
}

/// Decodes a segment. A damaged or incomplete record with nothing valid after it is a torn last write and is dropped
/// (it was never acknowledged: acknowledgement waits for fdatasync); one followed by a valid record is corruption.
pub fn decode_all(b: &[u8]) -> Result<Replay, Corrupt> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < b.len() {
        match record_at(&b[at..]) {
            Some((r, n)) => {
                records.push(r);
                at += n;
            }
            None => {
                if let Some(next) = (at + 1..b.len()).find(|&i| record_at(&b[i..]).is_some()) {
                    return Err(Corrupt {
                        offset: at,
                        next_valid: next,
                    });
                }
                return Ok(Replay {
                    records,
                    torn: b.len() - at,
                });
            }
        }
    }
    Ok(Replay { records, torn: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_replay_stops_at_a_torn_tail() {
        let kv = KeyValue {
            key: "/a".into(),
            value: Arc::from(&b"v"[..]),
            create_revision: 3,
            mod_revision: 4,
        };
        let mut buf = Vec::new();
        encode(&mut buf, 4, "/a", Some(&kv));
        encode(&mut buf, 5, "/a", None);
        let full = decode_all(&buf).unwrap();
        assert_eq!((full.records.len(), full.torn), (2, 0));
        assert_eq!(full.records[0].kv.as_ref(), Some(&kv));
        assert!(full.records[1].kv.is_none());
        let torn = decode_all(&buf[..buf.len() - 3]).unwrap();
        assert_eq!(torn.records.len(), 1, "a torn last record is dropped");
        assert!(torn.torn > 0);
        let mut garbled_tail = buf.clone();
        let last = garbled_tail.len() - 1;
        garbled_tail[last] ^= 0xff;
        garbled_tail.extend_from_slice(&[0; 64]);
        assert_eq!(
            decode_all(&garbled_tail).unwrap().records.len(),
            1,
            "a damaged last record (zeros after it) is a torn write"
        );
        // Damage to the first record while the second is intact: corruption, not a torn write.
        let mut middle = buf.clone();
        middle[12] ^= 0xff;
        let first_len = 8 + u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(
            decode_all(&middle).err(),
            Some(Corrupt {
                offset: 0,
                next_valid: first_len
            })
        );
        // A damaged length field too.
        let mut length = buf.clone();
        length[1] = 0x7f;
        assert!(decode_all(&length).is_err());
    }
}
