//! Encryption at rest, as Kubernetes' EncryptionConfiguration does it: a [`Store`] wrapper that encrypts the values
//! of chosen resources (Secrets by default) before they reach the backend and decrypts them on the way out, so the
//! store's files (or etcd) never hold them in clear.
//!
//! Each value is written as `k8s:enc:<provider>:v1:<key name>:<nonce><ciphertext>`, with `secretbox`
//! (XSalsa20-Poly1305, the default) or `aesgcm` (AES-256-GCM) and a random nonce. Values without that prefix are
//! read as they are (written before encryption was on). The keys are kept in `encryption.json` in the data
//! directory (0600, made at first start): the active key encrypts, every listed key decrypts. Rotation
//! ([`Encryption::rotate`]) adds a new active key, writes every encrypted resource again under it (readable
//! throughout: both keys decrypt meanwhile), compacts the history that still holds the old ciphertexts, then drops
//! the old key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use base64::Engine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{DynStore, Error, KeyValue, ListResult, Result, Store, WatchStream};

const PREFIX: &str = "k8s:enc:";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A cipher for values at rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// XSalsa20-Poly1305 (NaCl's secretbox): Kubernetes' recommended provider.
    Secretbox,
    /// AES-256-GCM with a random 96-bit nonce.
    Aesgcm,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Secretbox => "secretbox",
            Provider::Aesgcm => "aesgcm",
        }
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "secretbox" => Ok(Provider::Secretbox),
            "aesgcm" => Ok(Provider::Aesgcm),
            other => Err(format!(
                "unknown encryption provider {other:?} (secretbox or aesgcm)"
            )),
        }
    }
}

/// One key: its name (in every value it encrypted), cipher and 32 secret bytes (base64 in the file).
#[derive(Clone, Serialize, Deserialize)]
pub struct Key {
    pub name: String,
    pub provider: Provider,
    secret: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} {})", self.provider.name(), self.name)
    }
}

impl Key {
    fn generate(name: String, provider: Provider) -> Key {
        let bytes: [u8; 32] = rand::random();
        Key {
            name,
            provider,
            secret: B64.encode(bytes),
        }
    }

    fn bytes(&self) -> std::result::Result<[u8; 32], String> {
        let raw = B64
            .decode(&self.secret)
            .map_err(|e| format!("key {}: {e}", self.name))?;
        raw.try_into()
            .map_err(|_| format!("key {}: not 32 bytes", self.name))
    }

    fn header(&self) -> String {
        format!("{PREFIX}{}:v1:{}:", self.provider.name(), self.name)
    }

    fn seal(&self, plain: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let key = self.bytes()?;
        let mut out = self.header().into_bytes();
        match self.provider {
            Provider::Secretbox => {
                use crypto_secretbox::aead::{Aead, KeyInit};
                let nonce: [u8; 24] = rand::random();
                let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
                let sealed = cipher
                    .encrypt(&nonce.into(), plain)
                    .map_err(|_| "secretbox encryption failed".to_string())?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
            Provider::Aesgcm => {
                use ring::aead;
                let nonce: [u8; 12] = rand::random();
                let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &key)
                    .map_err(|_| "aesgcm key".to_string())?;
                let sealing = aead::LessSafeKey::new(unbound);
                let mut buf = plain.to_vec();
                sealing
                    .seal_in_place_append_tag(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::empty(),
                        &mut buf,
                    )
                    .map_err(|_| "aesgcm encryption failed".to_string())?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&buf);
            }
        }
        Ok(out)
    }

    fn open(&self, sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let key = self.bytes()?;
        let refused = || format!("value does not decrypt with key {}", self.name);
        match self.provider {
            Provider::Secretbox => {
                use crypto_secretbox::aead::{Aead, KeyInit};
                if sealed.len() < 24 {
                    return Err(refused());
                }
                let (nonce, body) = sealed.split_at(24);
                let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
                cipher
                    .decrypt(crypto_secretbox::Nonce::from_slice(nonce), body)
                    .map_err(|_| refused())
            }
            Provider::Aesgcm => {
                use ring::aead;
                if sealed.len() < 12 {
                    return Err(refused());
                }
                let (nonce, body) = sealed.split_at(12);
                let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &key)
                    .map_err(|_| "aesgcm key".to_string())?;
                let opening = aead::LessSafeKey::new(unbound);
                let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
                let mut buf = body.to_vec();
                let plain = opening
                    .open_in_place(nonce, aead::Aad::empty(), &mut buf)
                    .map_err(|_| refused())?;
                Ok(plain.to_vec())
            }
        }
    }
}

/// The keys, as kept in `encryption.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Keyring {
    /// The name of the key that encrypts.
    pub active: String,
    pub keys: Vec<Key>,
    /// Store key prefixes whose values are encrypted.
    pub prefixes: Vec<String>,
}

impl Keyring {
    fn active(&self) -> std::result::Result<&Key, String> {
        self.keys
            .iter()
            .find(|k| k.name == self.active)
            .ok_or_else(|| format!("the active key {:?} is not in the keyring", self.active))
    }

    fn covers(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// Why the encryption configuration cannot be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the encryption keys {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the encryption keys {path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// The storage prefix of a resource (`secrets`, `configmaps`, `deployments.apps`) - as the API server lays keys
/// out.
pub fn resource_prefix(resource: &str) -> String {
    match resource.split_once('.') {
        Some((plural, group)) => super::layout::prefix(group, plural),
        None => super::layout::prefix("", resource),
    }
}

/// Where servers sharing one store keep their common keyring (sealed with [`Sharing`]'s cipher).
pub const SHARED_KEY: &str = concat!("/", "capstan/encryption-keys");

/// How the keyring is sealed when several servers share one store (with a key derived from the cluster's token).
pub struct Sharing {
    pub seal: SealFn,
    pub open: OpenFn,
}

/// Seals bytes.
pub type SealFn = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;
/// Opens sealed bytes (None: they do not open).
pub type OpenFn = Box<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// The part of a keyring servers share: the keys and which one encrypts (what is encrypted stays each server's).
#[derive(Serialize, Deserialize)]
struct SharedKeys {
    active: String,
    keys: Vec<Key>,
}

/// The keyring of one data directory and the store wrapper that uses it.
pub struct Encryption {
    path: PathBuf,
    keyring: RwLock<Keyring>,
    /// Set when several servers share the store: the keyring is kept in it too, and followed.
    sharing: std::sync::OnceLock<Sharing>,
    /// The store underneath (set by [`Encryption::wrap`]), which rotation rewrites.
    raw: std::sync::OnceLock<DynStore>,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encryption({})", self.path.display())
    }
}

impl Encryption {
    /// The keys in `dir/encryption.json`, made with one `provider` key when there is none. `resources` (plural, or
    /// `plural.group`) choose what is encrypted.
    pub fn load_or_create(
        dir: &Path,
        provider: Provider,
        resources: &[String],
    ) -> std::result::Result<Self, ConfigError> {
        let path = dir.join("encryption.json");
        let invalid = |why: String| ConfigError::Invalid {
            path: path.clone(),
            why,
        };
        let mut keyring = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Keyring>(&bytes).map_err(|e| invalid(e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Key::generate("key1".into(), provider);
                Keyring {
                    active: key.name.clone(),
                    keys: vec![key],
                    prefixes: vec![],
                }
            }
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        keyring.active().map_err(invalid)?;
        for k in &keyring.keys {
            k.bytes().map_err(invalid)?;
        }
        keyring.prefixes = resources.iter().map(|r| resource_prefix(r)).collect();
        let enc = Encryption {
            path,
            keyring: RwLock::new(keyring),
            raw: std::sync::OnceLock::new(),
            rotating: tokio::sync::Mutex::new(()),
            sharing: std::sync::OnceLock::new(),
        };
        enc.save()?;
        Ok(enc)
    }

    fn save(&self) -> std::result::Result<(), ConfigError> {
        let ring = self.read().clone();
        let bytes = serde_json::to_vec_pretty(&ring).unwrap_or_default();
        crate::sys::write_private(&self.path, &bytes).map_err(|source| ConfigError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The active key's name and provider.
    pub fn active(&self) -> (String, Provider) {
        let ring = self.read();
        let p = ring
            .active()
            .map(|k| k.provider)
            .unwrap_or(Provider::Secretbox);
        (ring.active.clone(), p)
    }

    /// `store` with the values this keyring covers encrypted.
    pub fn wrap(self: &Arc<Self>, store: DynStore) -> DynStore {
        let _ = self.raw.set(store.clone());
        Arc::new(Encrypted {
            inner: store,
            enc: self.clone(),
        })
    }

    /// Shares the keyring with the other servers of the store set by [`Encryption::wrap`]: the one in the store is
    /// taken if there is one (this server's is published otherwise), and every change to it is followed, so a
    /// rotation through any server reaches all of them.
    pub async fn share(self: &Arc<Self>, sharing: Sharing) -> std::result::Result<(), String> {
        let raw = self
            .raw
            .get()
            .cloned()
            .ok_or("no store is encrypted with these keys")?;
        if self.sharing.set(sharing).is_err() {
            return Ok(());
        }
        if !self.refresh().await? {
            self.publish().await?;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let from = raw.revision().await.unwrap_or(0);
                // Anything published before the watch began is read now.
                if let Err(e) = this.refresh().await {
                    tracing::warn!("reading the shared encryption keys: {e}");
                }
                match raw.watch(SHARED_KEY, from).await {
                    Ok(mut events) => {
                        use futures::StreamExt;
                        while let Some(ev) = events.next().await {
                            let Ok(ev) = ev else { break };
                            if ev.kv.key == SHARED_KEY && ev.kind == super::EventType::Put {
                                if let Err(e) = this.adopt(&ev.kv.value) {
                                    tracing::warn!("the shared encryption keys: {e}");
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!("watching the shared encryption keys: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        Ok(())
    }

    /// Reads the shared keyring from the store and takes it. Returns whether there was one.
    async fn refresh(&self) -> std::result::Result<bool, String> {
        let (Some(raw), Some(_)) = (self.raw.get(), self.sharing.get()) else {
            return Ok(false);
        };
        match raw.get(SHARED_KEY).await.map_err(|e| e.to_string())? {
            Some(kv) => {
                self.adopt(&kv.value)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Takes a sealed shared keyring.
    fn adopt(&self, sealed: &[u8]) -> std::result::Result<(), String> {
        let sharing = self.sharing.get().ok_or("not shared")?;
        let plain = (sharing.open)(sealed)
            .ok_or("the shared encryption keys do not open with this cluster's token")?;
        let shared: SharedKeys = serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
        {
            let mut ring = self.keyring.write().unwrap_or_else(|e| e.into_inner());
            if ring.active == shared.active
                && ring
                    .keys
                    .iter()
                    .map(|k| &k.name)
                    .eq(shared.keys.iter().map(|k| &k.name))
            {
                return Ok(());
            }
            ring.active = shared.active;
            ring.keys = shared.keys;
            ring.active()?;
        }
        tracing::info!(active = %self.active().0, "took the cluster's encryption keys");
        self.save().map_err(|e| e.to_string())
    }

    /// Writes this keyring for the other servers (when shared).
    async fn publish(&self) -> std::result::Result<(), String> {
        let (Some(raw), Some(sharing)) = (self.raw.get(), self.sharing.get()) else {
            return Ok(());
        };
        let shared = {
            let ring = self.read();
            SharedKeys {
                active: ring.active.clone(),
                keys: ring.keys.clone(),
            }
        };
        let sealed = (sharing.seal)(&serde_json::to_vec(&shared).map_err(|e| e.to_string())?);
        match raw.update(SHARED_KEY, sealed.clone(), 0).await {
            Ok(_) => Ok(()),
            Err(Error::NotFound(_)) => match raw.create(SHARED_KEY, sealed).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    fn seal(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        let ring = self.read();
        if !ring.covers(key) {
            return Ok(value);
        }
        ring.active()
            .and_then(|k| k.seal(&value))
            .map_err(Error::Backend)
    }

    fn open(&self, key: &str, value: Arc<[u8]>) -> Result<Arc<[u8]>> {
        let Some(rest) = value.strip_prefix(PREFIX.as_bytes()) else {
            return Ok(value);
        };
        // <provider>:v1:<name>:<bytes>
        let mut parts = rest.splitn(4, |b| *b == b':');
        let (Some(provider), Some(_), Some(name), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Backend(format!("{key}: malformed encrypted value")));
        };
        let name = String::from_utf8_lossy(name);
        let provider = String::from_utf8_lossy(provider);
        let ring = self.read();
        let k = ring
            .keys
            .iter()
            .find(|k| k.name == name && k.provider.name() == provider)
            .ok_or_else(|| {
                Error::Backend(format!(
                    "{key}: encrypted with {provider} key {name:?}, which is not in the keyring"
                ))
            })?;
        k.open(body)
            .map(Arc::from)
            .map_err(|e| Error::Backend(format!("{key}: {e}")))
    }

    fn open_kv(&self, mut kv: KeyValue) -> Result<KeyValue> {
        kv.value = self.open(&kv.key, kv.value)?;
        Ok(kv)
    }

    /// Makes a new active key (`provider`, or the current one's), writes every covered value again under it, then
    /// drops the other keys. Values stay readable throughout. Returns the new key's name and how many values were
    /// written again.
    pub async fn rotate(
        &self,
        provider: Option<Provider>,
    ) -> std::result::Result<(String, usize), String> {
        let _one = self.rotating.lock().await;
        let raw = self
            .raw
            .get()
            .cloned()
            .ok_or("no store is encrypted with these keys")?;
        let name = {
            let mut ring = self.keyring.write().unwrap_or_else(|e| e.into_inner());
            let provider = provider
                .or_else(|| ring.active().ok().map(|k| k.provider))
                .unwrap_or(Provider::Secretbox);
            let mut n = ring.keys.len() + 1;
            while ring.keys.iter().any(|k| k.name == format!("key{n}")) {
                n += 1;
            }
            let key = Key::generate(format!("key{n}"), provider);
            ring.active = key.name.clone();
            let name = key.name.clone();
            ring.keys.insert(0, key);
            name
        };
        self.save().map_err(|e| e.to_string())?;
        if self.sharing.get().is_some() {
            // The other servers take the new key (they follow the shared keyring) before anything is rewritten, so
            // none of them writes under the old key after the rewrite.
            self.publish().await?;
            tokio::time::sleep(SHARING_GRACE).await;
        }
        let header = self.read().active()?.header().into_bytes();
        let prefixes = self.read().prefixes.clone();
        let mut rewritten = 0;
        // The raw values: those already under the new key are left alone, the rest are opened with whichever key
        // sealed them and sealed again with the new one (a compare-and-swap on the revision read).
        for prefix in prefixes {
            let mut after: Option<String> = None;
            loop {
                let page = raw
                    .list(&prefix, 0, after.as_deref(), 500)
                    .await
                    .map_err(|e| e.to_string())?;
                for kv in &page.kvs {
                    if kv.value.starts_with(&header) {
                        continue;
                    }
                    let plain = self
                        .open(&kv.key, kv.value.clone())
                        .map_err(|e| e.to_string())?;
                    let sealed = self
                        .seal(&kv.key, plain.to_vec())
                        .map_err(|e| e.to_string())?;
                    match raw.update(&kv.key, sealed, kv.mod_revision).await {
                        Ok(_) => rewritten += 1,
                        // Written meanwhile: that write already used the new key.
                        Err(Error::Conflict { .. }) | Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                after = page.kvs.last().map(|kv| kv.key.clone());
                if page.remaining == 0 || after.is_none() {
                    break;
                }
            }
        }
        // The history still holds values under the old keys: it goes (watchers behind it relist, as after any
        // compaction), and then the old keys.
        let now = raw.revision().await.map_err(|e| e.to_string())?;
        raw.compact(now).await.map_err(|e| e.to_string())?;
        {
            let mut ring = self.keyring.write().unwrap_or_else(|e| e.into_inner());
            let active = ring.active.clone();
            ring.keys.retain(|k| k.name == active);
        }
        self.save().map_err(|e| e.to_string())?;
        self.publish().await?;
        tracing::info!(key = %name, rewritten, "encryption key rotated");
        Ok((name, rewritten))
    }
}

impl Encrypted {
    /// Opens a value; one sealed under a key this server has not seen yet (another server rotated a moment ago)
    /// is opened after reading the shared keyring again.
    async fn open_or_refresh(&self, kv: KeyValue) -> Result<KeyValue> {
        match self.enc.open_kv(kv.clone()) {
            Err(Error::Backend(e)) if e.contains("not in the keyring") => {
                if self.enc.refresh().await.unwrap_or(false) {
                    self.enc.open_kv(kv)
                } else {
                    Err(Error::Backend(e))
                }
            }
            other => other,
        }
    }
}

/// How long a rotation waits for the other servers to take a new key before rewriting under it.
const SHARING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A store whose covered values are encrypted.
struct Encrypted {
    inner: DynStore,
    enc: Arc<Encryption>,
}

impl Encrypted {
    /// A page as read: every value opened.
    async fn open_page(&self, mut page: ListResult) -> Result<ListResult> {
        let mut opened = Vec::with_capacity(page.kvs.len());
        for kv in page.kvs {
            opened.push(self.open_or_refresh(kv).await?);
        }
        page.kvs = opened;
        Ok(page)
    }
}

#[async_trait]
impl Store for Encrypted {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match self.inner.get(key).await? {
            Some(kv) => Ok(Some(self.open_or_refresh(kv).await?)),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        let page = self
            .inner
            .list(prefix, revision, start_after, limit)
            .await?;
        self.open_page(page).await
    }

    async fn list_more(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        let page = self
            .inner
            .list_more(prefix, revision, start_after, limit)
            .await?;
        self.open_page(page).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let sealed = self.enc.seal(key, value)?;
        self.inner.create(key, sealed).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64> {
        let sealed = self.enc.seal(key, value)?;
        self.inner.update(key, sealed, expected).await
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<(i64, KeyValue)> {
        let (rev, kv) = self.inner.delete(key, expected).await?;
        Ok((rev, self.enc.open_kv(kv)?))
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream> {
        let enc = self.enc.clone();
        let stream = self.inner.watch(prefix, after).await?;
        Ok(Box::pin(stream.map(move |ev| {
            let mut ev = ev?;
            ev.kv = enc.open_kv(ev.kv)?;
            // A rewrite by a rotation that finished meanwhile has its previous value under a key now gone.
            ev.prev = ev.prev.take().and_then(|prev| enc.open_kv(prev).ok());
            Ok(ev)
        })))
    }

    async fn revision(&self) -> Result<i64> {
        self.inner.revision().await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::Embedded;

    fn open(
        dir: &Path,
        provider: Provider,
        resources: &[&str],
    ) -> (Arc<Encryption>, DynStore, DynStore) {
        let raw: DynStore = Arc::new(Embedded::open(&dir.join("db")).unwrap());
        let resources: Vec<String> = resources.iter().map(|r| r.to_string()).collect();
        let enc = Arc::new(Encryption::load_or_create(dir, provider, &resources).unwrap());
        let wrapped = enc.wrap(raw.clone());
        (enc, raw, wrapped)
    }

    fn secret_key(name: &str) -> String {
        format!("{}{name}", resource_prefix("secrets"))
    }

    #[tokio::test]
    async fn covered_values_are_sealed_at_rest_and_read_back_in_clear() {
        for provider in [Provider::Secretbox, Provider::Aesgcm] {
            let dir = tempfile::tempdir().unwrap();
            let (_, raw, store) = open(dir.path(), provider, &["secrets"]);
            let value = br#"{"data":{"password":"aHVudGVyMg=="}}"#.to_vec();
            store
                .create(&secret_key("a/db"), value.clone())
                .await
                .unwrap();
            let cm = format!("{}a/x", resource_prefix("configmaps"));
            store.create(&cm, b"plain".to_vec()).await.unwrap();
            let at_rest = raw.get(&secret_key("a/db")).await.unwrap().unwrap();
            let header = format!("k8s:enc:{}:v1:key1:", provider.name());
            assert!(at_rest.value.starts_with(header.as_bytes()));
            assert!(!at_rest.value.windows(8).any(|w| w == b"aHVudGVy"));
            assert_eq!(
                &*store.get(&secret_key("a/db")).await.unwrap().unwrap().value,
                &value[..]
            );
            assert_eq!(&*raw.get(&cm).await.unwrap().unwrap().value, b"plain");
            let listed = store
                .list(&resource_prefix("secrets"), 0, None, 0)
                .await
                .unwrap();
            assert_eq!(&*listed.kvs[0].value, &value[..]);
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(dir.path().join("encryption.json"))
                    .unwrap()
                    .permissions(),
            );
            assert_eq!(mode & 0o777, 0o600);
            // Values written before encryption was on are read as they are.
            raw.create(&secret_key("a/old"), b"clear".to_vec())
                .await
                .unwrap();
            assert_eq!(
                &*store
                    .get(&secret_key("a/old"))
                    .await
                    .unwrap()
                    .unwrap()
                    .value,
                b"clear"
            );
            // Another keyring cannot read them.
            let other = tempfile::tempdir().unwrap();
            let enc2 = Arc::new(
                Encryption::load_or_create(other.path(), provider, &["secrets".into()]).unwrap(),
            );
            let foreign = enc2.wrap(raw.clone());
            assert!(foreign.get(&secret_key("a/db")).await.is_err());
        }
    }

    #[tokio::test]
    async fn rotation_rewrites_everything_under_a_new_key_and_drops_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (enc, raw, store) = open(dir.path(), Provider::Secretbox, &["secrets"]);
        for i in 0..1200 {
            store
                .create(
                    &secret_key(&format!("a/s{i:04}")),
                    format!("value-{i}").into_bytes(),
                )
                .await
                .unwrap();
        }
        raw.create(&secret_key("a/zz-clear"), b"clear".to_vec())
            .await
            .unwrap();
        let watching = store
            .watch(&resource_prefix("secrets"), store.revision().await.unwrap())
            .await
            .unwrap();
        // A reader throughout the rotation always reads the value.
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    let kv = store.get(&secret_key("a/s0007")).await.unwrap().unwrap();
                    assert_eq!(&*kv.value, b"value-7");
                    tokio::task::yield_now().await;
                }
            })
        };
        let (name, rewritten) = enc.rotate(Some(Provider::Aesgcm)).await.unwrap();
        reader.await.unwrap();
        assert_eq!(name, "key2");
        assert_eq!(rewritten, 1201);
        let all = raw
            .list(&resource_prefix("secrets"), 0, None, 0)
            .await
            .unwrap();
        assert!(all
            .kvs
            .iter()
            .all(|kv| kv.value.starts_with(b"k8s:enc:aesgcm:v1:key2:")));
        let kept: Keyring =
            serde_json::from_slice(&std::fs::read(dir.path().join("encryption.json")).unwrap())
                .unwrap();
        assert_eq!(kept.keys.len(), 1);
        assert_eq!(kept.active, "key2");
        assert_eq!(
            &*store
                .get(&secret_key("a/s1199"))
                .await
                .unwrap()
                .unwrap()
                .value,
            b"value-1199"
        );
        // Watchers see the rewrites as changes, in clear.
        let first = watching.take(1).collect::<Vec<_>>().await;
        assert_eq!(&*first[0].as_ref().unwrap().kv.value, b"value-0");
        // A restart reads the new keyring.
        drop((enc, store));
        let again = Arc::new(
            Encryption::load_or_create(dir.path(), Provider::Secretbox, &["secrets".into()])
                .unwrap(),
        );
        assert_eq!(again.active(), ("key2".to_string(), Provider::Aesgcm));
    }

    #[tokio::test]
    async fn the_wrapped_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let raw: DynStore = Arc::new(Embedded::open(&dir.path().join("db")).unwrap());
        let enc =
            Arc::new(Encryption::load_or_create(dir.path(), Provider::Secretbox, &[]).unwrap());
        // Everything the suite writes is covered.
        enc.keyring.write().unwrap().prefixes = vec![String::new()];
        crate::store::conformance::run(enc.wrap(raw)).await;
    }
}
