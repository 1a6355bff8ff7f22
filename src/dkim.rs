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
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| DkimError::Io(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{domain}.{selector}.key"));
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
