//! The etcd backend (cargo feature `etcd`): the [`Store`] trait over etcd's v3 API, so several API servers can
//! share one distributed store. It maps one to one - etcd is what the trait was shaped on:
//!
//! - a key is stored under the configured prefix (`--etcd-prefix`, default none: keys are the API server's own
//!   `/registry/<resource>/<namespace>/<name>`, laid out as Kubernetes lays them out: see [`super::layout`]); a
//!   value as given;
//! - revisions are etcd's: the store revision is etcd's header revision, an object's resourceVersion its
//!   `mod_revision`;
//! - create, update and delete are transactions comparing `create_revision` (absent/present) or `mod_revision`
//!   (compare-and-swap), so no write is lost between API servers;
//! - list is a range read at a revision, paged by starting after the last key; etcd's `ErrCompacted` is
//!   [`Error::Compacted`] (410 Gone to clients);
//! - watch is etcd's watch from a revision with previous values, one per store shared by all its watchers
//!   ([`super::etcd_watch`]); a watch from before what that one holds is a watch of its own in etcd; a watch from a
//!   compacted revision fails at once, and a watch that etcd cancels for compaction ends with `Compacted`;
//! - compaction is etcd's compaction; the API server compacts periodically as with the embedded store.
//!
//! A store restored from a snapshot or migrated from the embedded store carries on from that store's revision: the
//! difference is kept in etcd (key [`REVISION_OFFSET_KEY`] under the prefix) and added to every revision read and
//! taken off every revision given, so resourceVersions only ever grow for clients of the old store.
//!
//! TLS client certificates (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`) are supported.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType as EtcdEventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use super::{Error, Event, EventType, KeyValue, ListResult, Result, Store, WatchStream};

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `host:port` (or `http(s)://host:port`) of each member.
    pub endpoints: Vec<String>,
    /// Prepended to every key.
    pub prefix: String,
    /// PEM of the CA that signed etcd's serving certificate.
    pub ca: Option<String>,
    /// PEM client certificate and key.
    pub identity: Option<(String, String)>,
}

impl Options {
    /// Options from a `--store etcd://HOST:PORT[,HOST:PORT...]` URL.
    pub fn from_url(url: &str) -> std::result::Result<Options, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?} is not an etcd:// URL"))?;
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(format!(
                "{url:?} names no etcd endpoint (etcd://HOST:PORT[,HOST:PORT...])"
            ));
        }
        Ok(Options {
            endpoints,
            ..Default::default()
        })
    }
}

/// The key (under the prefix) holding how far this store's revisions are ahead of etcd's own.
pub const REVISION_OFFSET_KEY: &str = concat!("/", "capstan/revision-offset");

/// The store on etcd.
pub struct Etcd {
    client: Client,
    /// The key-value service alone: cloned per request (cloning the whole client clones every service's channel).
    kvc: etcd_client::KvClient,
    prefix: String,
    /// Added to etcd's revisions (see [`REVISION_OFFSET_KEY`]).
    offset: i64,
    /// The watch all this store's watchers share, opened at the first watch.
    shared: Arc<tokio::sync::OnceCell<Arc<super::etcd_watch::Shared>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Etcd(prefix {:?})", self.prefix)
    }
}

fn backend(e: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd: {e}"))
}

/// etcd's answer to a read below its compaction revision.
fn compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("compacted"))
}

/// The key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Etcd {
    /// Connects to etcd (within 5 s).
    pub async fn connect(opts: &Options) -> Result<Etcd> {
        let endpoints: Vec<String> = opts
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else if opts.ca.is_some() || opts.identity.is_some() {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let mut connect = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_keep_alive(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(5),
            );
        if opts.ca.is_some() || opts.identity.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &opts.ca {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &opts.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(tls);
        }
        let client = Client::connect(&endpoints, Some(connect))
            .await
            .map_err(|e| {
                Error::Backend(format!(
                    "connecting to etcd at {}: {e}",
                    endpoints.join(",")
                ))
            })?;
        // Reachable now, not at the first request.
        let mut probe = client.clone();
        probe
            .get("/", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| {
                Error::Backend(format!(
                    "etcd at {} does not answer: {e}",
                    endpoints.join(",")
                ))
            })?;
        let offset_key = format!("{}{REVISION_OFFSET_KEY}", opts.prefix);
        let offset = match probe.get(offset_key.as_bytes(), None).await {
            Ok(r) => match r.kvs().first() {
                Some(kv) => std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        Error::Backend(format!("{offset_key} in etcd is not a number"))
                    })?,
                None => 0,
            },
            Err(e) => return Err(backend(e)),
        };
        Ok(Etcd {
            kvc: client.kv_client(),
            client,
            prefix: opts.prefix.clone(),
            offset,
            shared: Default::default(),
        })
    }

    /// Makes an empty store carry on from `revision`: every revision it reports from now on is greater. Refused
    /// when the store holds anything (its revisions would jump under its clients).
    pub async fn continue_from(&mut self, revision: i64) -> Result<()> {
        let p = self.key("/");
        let count = self
            .client()
            .get(
                p.clone(),
                Some(
                    GetOptions::new()
                        .with_range(prefix_end(&p))
                        .with_count_only(),
                ),
            )
            .await
            .map_err(backend)?
            .count();
        if count > 0 {
            return Err(Error::Backend(format!(
                "etcd already holds {count} keys under {:?}: restore and migrate only into an empty store",
                self.prefix
            )));
        }
        let current = self
            .client()
            .get("/", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(backend)?;
        let etcd_rev = current.header().map(|h| h.revision()).unwrap_or(0);
        let offset = (revision - etcd_rev).max(0);
        self.client()
            .put(self.key(REVISION_OFFSET_KEY), offset.to_string(), None)
            .await
            .map_err(backend)?;
        self.offset = offset;
        Ok(())
    }

    /// Our revision for etcd's `rev`.
    fn ours(&self, rev: i64) -> i64 {
        if rev > 0 {
            rev + self.offset
        } else {
            rev
        }
    }

    /// etcd's revision for our `rev` (at least 1: what came before the offset is history etcd never had).
    fn theirs(&self, rev: i64) -> i64 {
        if rev > 0 {
            (rev - self.offset).max(1)
        } else {
            rev
        }
    }

    fn key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        let key = String::from_utf8_lossy(kv.key());
        KeyValue {
            key: key
                .strip_prefix(self.prefix.as_str())
                .unwrap_or(&key)
                .to_string(),
            value: Arc::from(kv.value()),
            create_revision: self.ours(kv.create_revision()),
            mod_revision: self.ours(kv.mod_revision()),
        }
    }

    /// A handle on the same etcd and keys, without this one's shared watch.
    fn detached(&self) -> Etcd {
        Etcd {
            client: self.client(),
            kvc: self.kvc.clone(),
            prefix: self.prefix.clone(),
            offset: self.offset,
            shared: Default::default(),
        }
    }

    /// One etcd watch event as ours (a delete carries the last value, at the deleting revision).
    pub(super) fn event(&self, e: &etcd_client::Event) -> Option<Event> {
        let kv = self.kv(e.kv()?);
        let prev = e.prev_kv().map(|p| self.kv(p));
        Some(match e.event_type() {
            EtcdEventType::Put => Event {
                kind: EventType::Put,
                kv,
                prev,
            },
            EtcdEventType::Delete => Event {
                kind: EventType::Delete,
                kv: KeyValue {
                    key: kv.key,
                    value: prev
                        .as_ref()
                        .map(|p| p.value.clone())
                        .unwrap_or_else(|| Arc::from(&b""[..])),
                    create_revision: prev.as_ref().map_or(0, |p| p.create_revision),
                    mod_revision: kv.mod_revision,
                },
                prev,
            },
        })
    }

    /// Is `after` (ours) compacted in etcd? Asks for a count at that revision.
    async fn compacted_at(&self, p: &[u8], after: i64) -> Result<bool> {
        let after_theirs = self.theirs(after);
        if after <= 0 || after_theirs <= 0 {
            return Ok(false);
        }
        let check = GetOptions::new()
            .with_range(prefix_end(p))
            .with_revision(after_theirs)
            .with_count_only()
            .with_limit(1);
        match self.client().get(p.to_vec(), Some(check)).await {
            Ok(_) => Ok(false),
            Err(e) if compacted(&e) => Ok(true),
            // A revision in the future: etcd waits for it, as the embedded store does.
            Err(e) if e.to_string().contains("future") => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    /// Opens the shared watch of every object's key (under [`super::etcd_watch::SHARED`]): after `after` (ours) when given and not compacted,
    /// otherwise after the current revision. Returns the revision it follows on from.
    pub(super) async fn open_shared(
        &self,
        after: Option<i64>,
    ) -> Result<(i64, etcd_client::WatchStream)> {
        let p = self.key(super::etcd_watch::SHARED);
        let from = match after {
            Some(a) if !self.compacted_at(&p, a).await? => a,
            _ => self.revision().await?,
        };
        let mut opts = WatchOptions::new()
            .with_range(prefix_end(&p))
            .with_prev_key();
        let theirs = self.theirs(from);
        if theirs > 0 {
            opts = opts.with_start_revision(theirs + 1);
        }
        let stream = self.client().watch(p, Some(opts)).await.map_err(backend)?;
        Ok((from, stream))
    }

    /// One range read: at most `limit` keys (0: all) under `prefix` after `start_after`, at `revision`.
    async fn range(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        let p = self.key(prefix);
        let start = match start_after {
            // The next key after `start_after`.
            Some(after) => {
                let mut k = self.key(after);
                k.push(0);
                k
            }
            None => p.clone(),
        };
        let mut opts = GetOptions::new().with_range(prefix_end(&p));
        if revision > 0 {
            if revision <= self.offset {
                return Err(Error::Compacted {
                    requested: revision,
                    compacted: self.offset,
                });
            }
            opts = opts.with_revision(self.theirs(revision));
        }
        if limit > 0 {
            opts = opts.with_limit(limit as i64);
        }
        let resp = match self.kvc.clone().get(start, Some(opts)).await {
            Ok(r) => r,
            Err(e) if compacted(&e) => {
                return Err(Error::Compacted {
                    requested: revision,
                    compacted: 0,
                })
            }
            Err(e) => return Err(backend(e)),
        };
        let kvs: Vec<KeyValue> = resp.kvs().iter().map(|kv| self.kv(kv)).collect();
        let remaining = (resp.count() as usize).saturating_sub(kvs.len());
        let at = if revision > 0 {
            revision
        } else {
            self.ours(resp.header().map(|h| h.revision()).unwrap_or(0))
        };
        Ok(ListResult {
            kvs,
            revision: at,
            remaining,
        })
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    /// A guarded put or delete: runs `op` when `guard` holds; otherwise tells NotFound from Conflict.
    async fn guarded(
        &self,
        key: &str,
        expected: i64,
        op: TxnOp,
    ) -> Result<etcd_client::TxnResponse> {
        let k = self.key(key);
        let guard = if expected == 0 {
            Compare::create_revision(k.clone(), CompareOp::Greater, 0)
        } else {
            Compare::mod_revision(k.clone(), CompareOp::Equal, self.theirs(expected))
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([op])
            .or_else([TxnOp::get(k, None)]);
        let resp = self.kvc.clone().txn(txn).await.map_err(backend)?;
        if resp.succeeded() {
            return Ok(resp);
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| self.ours(kv.mod_revision())),
            _ => None,
        });
        match current {
            None => Err(Error::NotFound(key.to_string())),
            Some(actual) => Err(Error::Conflict {
                key: key.to_string(),
                expected,
                actual,
            }),
        }
    }
}

/// Keys per etcd read in a large list.
const PAGE: usize = 1000;

impl Etcd {
    /// The revision a transaction made, as ours.
    fn revision_of(&self, resp: &etcd_client::TxnResponse) -> i64 {
        self.ours(resp.header().map(|h| h.revision()).unwrap_or(0))
    }
}

#[async_trait]
impl Store for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .kvc
            .clone()
            .get(self.key(key), None)
            .await
            .map_err(backend)?;
        Ok(resp.kvs().first().map(|kv| self.kv(kv)))
    }

    async fn list(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        if limit > 0 && limit <= PAGE {
            return self.range(prefix, revision, start_after, limit).await;
        }
        // Large reads go in pages at one revision: one etcd response is at most 4 MiB by default.
        let mut out = self.range(prefix, revision, start_after, PAGE).await?;
        let at = out.revision;
        while out.remaining > 0 && (limit == 0 || out.kvs.len() < limit) {
            let want = if limit == 0 {
                PAGE
            } else {
                (limit - out.kvs.len()).min(PAGE)
            };
            let after = out.kvs.last().map(|kv| kv.key.clone());
            let next = self.range(prefix, at, after.as_deref(), want).await?;
            out.kvs.extend(next.kvs);
            out.remaining = next.remaining;
        }
        Ok(out)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let k = self.key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, value, None)]);
        let resp = self.kvc.clone().txn(txn).await.map_err(backend)?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        Ok(self.revision_of(&resp))
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64> {
        let op = TxnOp::put(self.key(key), value, Some(PutOptions::new()));
        let resp = self.guarded(key, expected, op).await?;
        Ok(self.revision_of(&resp))
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<(i64, KeyValue)> {
        let op = TxnOp::delete(self.key(key), Some(DeleteOptions::new().with_prev_key()));
        let resp = self.guarded(key, expected, op).await?;
        let rev = self.revision_of(&resp);
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| self.kv(kv)),
                _ => None,
            })
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        Ok((rev, prev))
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream> {
        let p = self.key(prefix);
        // A watch from a compacted revision fails now, as the embedded store's does (etcd would cancel it later).
        if after > 0 && after < self.offset {
            return Err(Error::Compacted {
                requested: after,
                compacted: self.offset,
            });
        }
        // The shared watch, when its memory covers `after`.
        let shared = self
            .shared
            .get_or_try_init(|| super::etcd_watch::Shared::start(self.detached()))
            .await;
        match shared {
            Ok(shared) => {
                if let Some(w) = shared.watch(prefix, after) {
                    return Ok(w);
                }
            }
            Err(e) => tracing::debug!(error = %e, "no shared etcd watch; watching on its own"),
        }
        let after_theirs = if after > 0 { after - self.offset } else { 0 };
        if after_theirs > 0 && self.compacted_at(&p, after).await? {
            return Err(Error::Compacted {
                requested: after,
                compacted: 0,
            });
        }
        let mut opts = WatchOptions::new()
            .with_range(prefix_end(&p))
            .with_prev_key()
            .with_progress_notify();
        if after > 0 {
            opts = opts.with_start_revision(after_theirs + 1);
        }
        let stream = self.client().watch(p, Some(opts)).await.map_err(backend)?;
        let this = self.detached();
        let events = stream
            .map(move |resp| -> Vec<Result<Event>> {
                let resp = match resp {
                    Ok(r) => r,
                    Err(e) => return vec![Err(backend(e))],
                };
                if resp.compact_revision() > 0 {
                    return vec![Err(Error::Compacted {
                        requested: after,
                        compacted: this.ours(resp.compact_revision()),
                    })];
                }
                if resp.canceled() {
                    return vec![Err(Error::Backend(format!(
                        "etcd cancelled the watch: {}",
                        resp.cancel_reason()
                    )))];
                }
                resp.events()
                    .iter()
                    .filter_map(|e| this.event(e).map(Ok))
                    .collect()
            })
            .flat_map(futures::stream::iter);
        // The stream ends after its first error, as the trait says.
        let mut failed = false;
        let events = events.take_while(move |e| {
            let go = !failed;
            failed = e.is_err();
            futures::future::ready(go)
        });
        Ok(Box::pin(events))
    }

    async fn revision(&self) -> Result<i64> {
        let resp = self
            .client()
            .get("/", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(backend)?;
        Ok(self.ours(resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        if revision <= self.offset {
            return Ok(());
        }
        if let Some(shared) = self.shared.get() {
            shared.compacted(revision);
        }
        match self.client().compact(self.theirs(revision), None).await {
            Ok(_) => Ok(()),
            // Already compacted there or beyond: nothing to do.
            Err(e) if compacted(&e) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoints_and_prefixes_end_ranges() {
        let o = Options::from_url("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(o.endpoints, ["127.0.0.1:2379", "10.0.0.2:2379"]);
        assert!(Options::from_url("etcd://").is_err());
        assert!(Options::from_url("http://x").is_err());
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}
