//! DKIM keys: an RSA 2048 key per domain and selector. The public half is what the DNS record
//! publishes; the private half never leaves its store in the clear. It is sealed with
//! ChaCha20-Poly1305 under a key taken from the environment variable the config names
//! (`[dkim] key_env`), or, when that variable is not set, written to a file of its own with
//! mode 0600. It is never printed and never logged.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use std::path::{Path, PathBuf};

pub const RSA_BITS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkimError {
    #[error("{0}")]
    Invalid(String),
    #[error("dkim: {0}")]
    Crypto(String),
    #[error("dkim: {0}")]
    Io(String),
    #[error("dkim: {0}")]
    Store(String),
}

impl From<crate::store::StoreError> for DkimError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Rejected(m) => DkimError::Invalid(m),
            other => DkimError::Store(other.to_string()),
        }
    }
}

/// The key algorithms a domain may publish: RSA always, Ed25519 beside it (RFC 8463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa2048,
    Ed25519,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rsa2048 => "rsa-2048",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// A new key: its private half as PKCS#8 DER (wiped when dropped) and its public half as
/// base64 SubjectPublicKeyInfo — the DKIM record's `p=` value.
pub struct NewKey {
    pub private_der: zeroize::Zeroizing<Vec<u8>>,
    pub public_b64: String,
}

pub fn generate_rsa() -> Result<NewKey, DkimError> {
    let mut rng = rand::rngs::OsRng;
    let private = RsaPrivateKey::new(&mut rng, RSA_BITS)
        .map_err(|e| DkimError::Crypto(format!("cannot make an RSA key: {e}")))?;
    let public = RsaPublicKey::from(&private);
    let spki = public
        .to_public_key_der()
        .map_err(|e| DkimError::Crypto(format!("cannot encode the public key: {e}")))?;
    let der = private
        .to_pkcs8_der()
        .map_err(|e| DkimError::Crypto(format!("cannot encode the private key: {e}")))?;
    Ok(NewKey {
        private_der: zeroize::Zeroizing::new(der.as_bytes().to_vec()),
        public_b64: B64.encode(spki.as_bytes()),
    })
}

/// A new Ed25519 key: PKCS#8 (v2, as ring writes it) and the raw 32-byte public key in
/// base64, which is what an Ed25519 DKIM record's `p=` holds (RFC 8463 §4).
pub fn generate_ed25519() -> Result<NewKey, DkimError> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| DkimError::Crypto("cannot make an Ed25519 key".into()))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map_err(|_| DkimError::Crypto("cannot read the new Ed25519 key".into()))?;
    Ok(NewKey {
        private_der: zeroize::Zeroizing::new(doc.as_ref().to_vec()),
        public_b64: B64.encode(pair.public_key().as_ref()),
    })
}

/// A private key's PKCS#8 DER as PEM (`PRIVATE KEY`), as OpenDKIM and Postfix read it on a
/// node. Wiped when dropped.
pub fn pkcs8_pem(der: &[u8]) -> zeroize::Zeroizing<String> {
    let b64 = zeroize::Zeroizing::new(B64.encode(der));
    let mut s = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END PRIVATE KEY-----\n");
    zeroize::Zeroizing::new(s)
}

/// Where a private key was kept, and how to say so (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub sealed: Option<Vec<u8>>,
    pub file: Option<String>,
    pub said: String,
}

/// Keeps a private key (DER) as the config says: sealed under the key in `$key_env`, bound
/// to `aad`, or else written to `dir/STEM.key` with mode 0600.
pub fn keep(
    key_env: &str,
    dir: &Path,
    stem: &str,
    der: &[u8],
    aad: &str,
) -> Result<Kept, DkimError> {
    match sealing_key(key_env)? {
        Some(k) => Ok(Kept {
            sealed: Some(seal(&k, der, aad.as_bytes())?),
            file: None,
            said: format!("sealed in the database with ${key_env}"),
        }),
        None => {
            // A file left by an earlier database (a demo made again, a restored backup) is
            // never overwritten: the key goes beside it under the next free name.
            let mut name = stem.to_string();
            let mut n = 1;
            while dir.join(format!("{name}.key")).exists() {
                n += 1;
                name = format!("{stem}-{n}");
            }
            let path = write_pem_file(dir, &name, der)?;
            let shown = path.display().to_string();
            Ok(Kept {
                sealed: None,
                file: Some(shown.clone()),
                said: format!(
                    "in {shown} (mode 0600; set ${key_env} to seal keys in the database instead)"
                ),
            })
        }
    }
}

/// Gets back a private key kept by [`keep`].
pub fn recover(
    key_env: &str,
    sealed: Option<&[u8]>,
    file: Option<&str>,
    aad: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, DkimError> {
    match (sealed, file) {
        (Some(s), _) => {
            let k = sealing_key(key_env)?.ok_or_else(|| {
                DkimError::Invalid(format!(
                    "{key_env}: is not set, and the key is sealed under it"
                ))
            })?;
            open(&k, s, aad.as_bytes())
        }
        (None, Some(f)) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(f).map_err(|e| DkimError::Io(format!("{f}: {e}")))?,
            );
            let (_, der) = rsa::pkcs8::der::pem::decode_vec(text.as_bytes())
                .map_err(|_| DkimError::Crypto(format!("{f}: is not a PEM private key")))?;
            Ok(zeroize::Zeroizing::new(der))
        }
        (None, None) => Err(DkimError::Invalid("the key was kept nowhere".into())),
    }
}

/// A key made and recorded for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    pub public_b64: String,
    pub kept: String,
}

/// Makes a key for `domain` and `selector`, keeps its private half and records it. Nothing
/// half-made is left behind when recording fails.
pub async fn make_key(
    store: &crate::store::Store,
    cfg: &crate::config::Config,
    now: chrono::DateTime<chrono::Utc>,
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
) -> Result<MadeKey, DkimError> {
    let key = match algorithm {
        Algorithm::Rsa2048 => tokio::task::spawn_blocking(generate_rsa)
            .await
            .map_err(|e| DkimError::Crypto(format!("key generation stopped: {e}")))??,
        Algorithm::Ed25519 => generate_ed25519()?,
    };
    let dir = store.key_dir("dkim");
    let kept = keep(
        &cfg.dkim.key_env,
        &dir,
        &format!("{domain}.{selector}"),
        &key.private_der,
        &format!("{domain}/{selector}"),
    )?;
    let stored = store
        .add_dkim_key(
            domain,
            selector,
            algorithm.as_str(),
            &key.public_b64,
            kept.sealed.clone(),
            kept.file.as_deref().map(|f| store.key_record(Path::new(f))),
            now,
        )
        .await;
    if let Err(e) = stored {
        if let Some(f) = &kept.file {
            let _ = std::fs::remove_file(f);
        }
        return Err(e.into());
    }
    Ok(MadeKey {
        domain: domain.to_string(),
        selector: selector.to_string(),
        algorithm,
        public_b64: key.public_b64,
        kept: kept.said,
    })
}

/// The keys a domain signs with now: its oldest RSA key not retired, and its oldest Ed25519
/// key not retired (if any).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActiveKeys {
    pub rsa: Option<(String, String)>,
    pub ed25519: Option<(String, String)>,
}

pub async fn active_keys(
    store: &crate::store::Store,
    domain: &str,
) -> Result<ActiveKeys, DkimError> {
    let mut out = ActiveKeys::default();
    // Listed oldest first per domain: the oldest key not retired signs. A newer one (a
    // rotation under way) takes over only once the older is retired — after the new
    // selector answers from the zone.
    for k in store.dkim_keys().await? {
        if k.domain != domain || k.retired_at.is_some() {
            continue;
        }
        let slot = match k.algorithm.as_str() {
            "ed25519" => &mut out.ed25519,
            _ => &mut out.rsa,
        };
        if slot.is_none() {
            *slot = Some((k.selector.clone(), k.public_key.clone()));
        }
    }
    Ok(out)
}

/// The domain's active keys, made first where missing: RSA with the configured selector,
/// and, when `[dns] ed25519` is set, Ed25519 with `SELECTOR-ed`. Returns the keys and
/// what was made.
pub async fn ensure_keys(
    store: &crate::store::Store,
    cfg: &crate::config::Config,
    now: chrono::DateTime<chrono::Utc>,
    domain: &str,
) -> Result<(ActiveKeys, Vec<MadeKey>), DkimError> {
    let mut keys = active_keys(store, domain).await?;
    let mut made = Vec::new();
    if keys.rsa.is_some() && (keys.ed25519.is_some() || !cfg.dns.ed25519) {
        return Ok((keys, made));
    }
    // Two workers configuring nodes of one new domain at once make one key, not two: the
    // second waits here and then finds the first one's key. Other domains go on meanwhile.
    // The lock is per database as well as per domain: two stores in one process (tests, a
    // demo beside a real engine) never wait on each other.
    type Locks =
        std::collections::HashMap<(PathBuf, String), std::sync::Arc<tokio::sync::Mutex<()>>>;
    static MAKING: std::sync::OnceLock<std::sync::Mutex<Locks>> = std::sync::OnceLock::new();
    let lock = MAKING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((store.path().to_path_buf(), domain.to_string()))
        .or_default()
        .clone();
    let _one_at_a_time = lock.lock().await;
    keys = active_keys(store, domain).await?;
    if keys.rsa.is_none() {
        let selector = free_selector(store, domain, &cfg.dkim.selector).await?;
        match make_key(store, cfg, now, domain, &selector, Algorithm::Rsa2048).await {
            Ok(m) => made.push(m),
            // Another worker made the domain's key at the same moment: use theirs.
            Err(DkimError::Invalid(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if cfg.dns.ed25519 && keys.ed25519.is_none() {
        let rsa = active_keys(store, domain).await?.rsa.map(|(s, _)| s);
        let base = rsa.unwrap_or_else(|| cfg.dkim.selector.clone());
        let selector = free_selector(store, domain, &format!("{base}-ed")).await?;
        match make_key(store, cfg, now, domain, &selector, Algorithm::Ed25519).await {
            Ok(m) => made.push(m),
            Err(DkimError::Invalid(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if !made.is_empty() {
        keys = active_keys(store, domain).await?;
    }
    Ok((keys, made))
}

/// The next selector after `current`: its trailing number plus one ("mf1" → "mf2"), or
/// "-2" appended; skipping any the domain has used.
pub fn next_selector(current: &str) -> String {
    let digits = current.len() - current.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = current.split_at(current.len() - digits);
    match num.parse::<u64>() {
        Ok(n) if !num.is_empty() => format!("{stem}{}", n + 1),
        _ => format!("{current}-2"),
    }
}

/// The selectors `domain` has keys under, retired ones included.
pub async fn used_selectors(
    store: &crate::store::Store,
    domain: &str,
) -> Result<std::collections::HashSet<String>, DkimError> {
    Ok(store
        .dkim_keys()
        .await?
        .into_iter()
        .filter(|k| k.domain == domain)
        .map(|k| k.selector)
        .collect())
}

/// `wanted`, or the first selector after it the domain has not used.
pub async fn free_selector(
    store: &crate::store::Store,
    domain: &str,
    wanted: &str,
) -> Result<String, DkimError> {
    let used = used_selectors(store, domain).await?;
    let mut s = wanted.to_string();
    while used.contains(&s) {
        s = next_selector(&s);
    }
    Ok(s)
}

/// The public key (base64 SPKI) of a private key given as PKCS#8 DER.
pub fn public_of(private_der: &[u8]) -> Result<String, DkimError> {
    let private = RsaPrivateKey::from_pkcs8_der(private_der)
        .map_err(|e| DkimError::Crypto(format!("not a private key: {e}")))?;
    let spki = RsaPublicKey::from(&private)
        .to_public_key_der()
        .map_err(|e| DkimError::Crypto(format!("cannot encode the public key: {e}")))?;
    Ok(B64.encode(spki.as_bytes()))
}

/// The sealing key from the environment variable `name`: 32 bytes, base64. `Ok(None)` when
/// the variable is not set; an error (naming the variable, never its value) when it is set
/// but wrong.
pub fn sealing_key(name: &str) -> Result<Option<zeroize::Zeroizing<[u8; 32]>>, DkimError> {
    let Ok(text) = std::env::var(name) else {
        return Ok(None);
    };
    let raw = zeroize::Zeroizing::new(B64.decode(text.trim()).map_err(|_| {
        DkimError::Invalid(format!(
            "{name}: is not base64 (want 32 random bytes, base64)"
        ))
    })?);
    let key: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
        DkimError::Invalid(format!(
            "{name}: must hold 32 bytes, base64 (it holds {})",
            raw.len()
        ))
    })?;
    Ok(Some(zeroize::Zeroizing::new(key)))
}

/// Seals `plain` under `key`: a random 12-byte nonce, then the ciphertext and its tag.
/// `aad` binds the sealed key to what it is for (domain and selector).
pub fn seal(key: &[u8; 32], plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, DkimError> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            chacha20poly1305::aead::Payload { msg: plain, aad },
        )
        .map_err(|_| DkimError::Crypto("cannot seal the private key".into()))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

/// Opens what [`seal`] sealed; a wrong key, a wrong `aad` or tampering is an error.
pub fn open(
    key: &[u8; 32],
    sealed: &[u8],
    aad: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, DkimError> {
    if sealed.len() < 12 + 16 {
        return Err(DkimError::Crypto("the sealed key is too short".into()));
    }
    let (nonce, body) = sealed.split_at(12);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            chacha20poly1305::aead::Payload { msg: body, aad },
        )
        .map(zeroize::Zeroizing::new)
        .map_err(|_| {
            DkimError::Crypto(
                "cannot open the private key: wrong sealing key, or it was altered".into(),
            )
        })
}

/// Writes a private key to its own file, readable by the owner only (created new: an
/// existing file is never overwritten).
pub fn write_key_file(
    dir: &Path,
    domain: &str,
    selector: &str,
    der: &[u8],
) -> Result<PathBuf, DkimError> {
    write_pem_file(dir, &format!("{domain}.{selector}"), der)
}

/// Writes a PKCS#8 private key as PEM to `dir/STEM.key`, mode 0600, never overwriting.
pub fn write_pem_file(dir: &Path, stem: &str, der: &[u8]) -> Result<PathBuf, DkimError> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| DkimError::Io(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{stem}.key"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .map_err(|e| DkimError::Io(format!("{}: {e}", path.display())))?;
    let pem = rsa::pkcs8::der::pem::encode_string(
        "PRIVATE KEY",
        rsa::pkcs8::der::pem::LineEnding::LF,
        der,
    )
    .map_err(|e| DkimError::Crypto(format!("cannot encode the private key: {e}")))?;
    let pem = zeroize::Zeroizing::new(pem);
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| DkimError::Io(format!("{}: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_seals_opens_and_matches_its_public_half() {
        let k = generate_rsa().expect("key");
        // A 2048-bit SPKI is 294 bytes: 392 base64 characters, two TXT strings.
        assert_eq!(k.public_b64.len(), 392);
        let key = [7u8; 32];
        let sealed = seal(&key, &k.private_der, b"example.com/mf1").expect("seal");
        assert!(!sealed
            .windows(16)
            .any(|w| k.private_der.windows(16).next() == Some(w)));
        let opened = open(&key, &sealed, b"example.com/mf1").expect("open");
        assert_eq!(public_of(&opened).expect("public"), k.public_b64);
        assert!(
            open(&[8u8; 32], &sealed, b"example.com/mf1").is_err(),
            "wrong key"
        );
        assert!(
            open(&key, &sealed, b"example.com/mf2").is_err(),
            "wrong selector"
        );
        let mut bent = sealed.clone();
        let last = bent.len() - 1;
        bent[last] ^= 1;
        assert!(open(&key, &bent, b"example.com/mf1").is_err(), "tampered");
    }

    #[test]
    fn sealing_keys_come_from_the_environment_and_bad_ones_are_named_not_shown() {
        assert_eq!(
            sealing_key("MAILFLEET_TEST_DKIM_UNSET_VAR").expect("unset"),
            None
        );
        std::env::set_var("MAILFLEET_TEST_DKIM_SHORT", B64.encode([1u8; 16]));
        let e = sealing_key("MAILFLEET_TEST_DKIM_SHORT")
            .expect_err("short")
            .to_string();
        assert!(
            e.starts_with("MAILFLEET_TEST_DKIM_SHORT: must hold 32 bytes"),
            "{e}"
        );
        assert!(!e.contains(&B64.encode([1u8; 16])));
        std::env::set_var("MAILFLEET_TEST_DKIM_OK", B64.encode([2u8; 32]));
        assert_eq!(
            sealing_key("MAILFLEET_TEST_DKIM_OK")
                .expect("ok")
                .map(|k| *k),
            Some([2u8; 32])
        );
    }

    #[test]
    fn a_key_file_is_the_owners_alone_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tmp");
        let k = generate_rsa().expect("key");
        let path = write_key_file(dir.path(), "example.com", "mf1", &k.private_der).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(write_key_file(dir.path(), "example.com", "mf1", &k.private_der).is_err());
    }
}
