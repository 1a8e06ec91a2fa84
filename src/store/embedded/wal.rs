//! The WAL record format: `len u32 | crc32 u32 | payload`, payload = `revision i64 | op u8 | create i64 |
//! key len u32 | key | value len u32 | value` (little-endian). Replay stops at the first torn or corrupt record.

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

pub fn decode_all(mut b: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(len) = u32_at(&mut b) {
        let Some(crc) = u32_at(&mut b) else { break };
        let Some(p) = take(&mut b, len as usize) else {
            break;
        };
        if crc32fast::hash(p) != crc {
            break;
        }
        match record(p) {
            Some(r) => out.push(r),
            None => break,
        }
    }
    out
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
        let full = decode_all(&buf);
        assert_eq!(full.len(), 2);
        assert_eq!(full[0].kv.as_ref(), Some(&kv));
        assert!(full[1].kv.is_none());
        let torn = decode_all(&buf[..buf.len() - 3]);
        assert_eq!(torn.len(), 1, "a torn last record is ignored");
        let mut corrupt = buf.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert_eq!(
            decode_all(&corrupt).len(),
            1,
            "a corrupt record ends the replay"
        );
    }
}
