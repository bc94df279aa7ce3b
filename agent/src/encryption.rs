//! Evidence encrypted on the host to the collector's key: age, with an X25519 recipient
//! (`age1…`), so an offline collection on a USB stick or in a bucket, or the self-test's
//! canary, can be read only where the matching identity is (the collector).
//!
//! The format is plain age (age-encryption.org/v1): `age -d -i KEY FILE` gives back the
//! clear bytes. It streams in 64 KiB pieces, so an item is never whole in memory.

use std::io::{self, Write};
use std::str::FromStr;

/// In the state directory: the recipient the collector gave at enrollment or in its last
/// `welcome`, for `cairn-agent collect --encrypt`.
pub const RECIPIENT_FILE: &str = "collector.age-recipient";

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("{given:?} is not an age X25519 recipient ({why}); expected `age1…` as `age-keygen -y` prints it")]
    BadRecipient { given: String, why: String },
    #[error("cannot set up age encryption: {0}")]
    Setup(String),
    #[error("cannot write encrypted output: {0}")]
    Io(#[from] io::Error),
}

/// A validated recipient.
#[derive(Clone)]
pub struct Recipient {
    key: age::x25519::Recipient,
    text: String,
}

impl Recipient {
    pub fn parse(s: &str) -> Result<Recipient, EncryptionError> {
        let text = s.trim();
        let key = age::x25519::Recipient::from_str(text).map_err(|why| {
            EncryptionError::BadRecipient {
                given: text.chars().take(100).collect(),
                why: why.to_string(),
            }
        })?;
        Ok(Recipient {
            key,
            text: text.to_string(),
        })
    }

    /// `age1…`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A writer that encrypts everything written to it into `out`; call
    /// [`Encrypted::finish`] at the end, or the file is truncated (and fails to decrypt).
    pub fn encrypt_into<W: Write>(&self, out: W) -> Result<Encrypted<W>, EncryptionError> {
        let enc = age::Encryptor::with_recipients(std::iter::once(&self.key as _))
            .map_err(|e| EncryptionError::Setup(e.to_string()))?;
        Ok(Encrypted(enc.wrap_output(out)?))
    }

    /// Small bytes (the self-test's canary), whole.
    pub fn encrypt(&self, clear: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let mut w = self.encrypt_into(Vec::with_capacity(clear.len() + 256))?;
        w.write_all(clear)?;
        Ok(w.finish()?)
    }
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// An age stream being written.
pub struct Encrypted<W: Write>(age::stream::StreamWriter<W>);

impl<W: Write> Encrypted<W> {
    /// Writes the last piece and its tag; returns the writer beneath.
    pub fn finish(self) -> io::Result<W> {
        self.0.finish()
    }
}

impl<W: Write> Write for Encrypted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Clear or encrypted output, written the same way.
pub enum MaybeEncrypted<W: Write> {
    Clear(W),
    Encrypted(Encrypted<W>),
}

impl<W: Write> MaybeEncrypted<W> {
    pub fn new(out: W, to: Option<&Recipient>) -> Result<MaybeEncrypted<W>, EncryptionError> {
        Ok(match to {
            Some(r) => MaybeEncrypted::Encrypted(r.encrypt_into(out)?),
            None => MaybeEncrypted::Clear(out),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            MaybeEncrypted::Clear(w) => Ok(w),
            MaybeEncrypted::Encrypted(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for MaybeEncrypted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeEncrypted::Clear(w) => w.write(buf),
            MaybeEncrypted::Encrypted(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeEncrypted::Clear(w) => w.flush(),
            MaybeEncrypted::Encrypted(e) => e.flush(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decrypt(identity: &age::x25519::Identity, bytes: &[u8]) -> Vec<u8> {
        let d = age::Decryptor::new_buffered(bytes).unwrap();
        let mut r = d
            .decrypt(std::iter::once(identity as &dyn age::Identity))
            .unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn what_is_encrypted_to_a_recipient_decrypts_with_its_identity_only() {
        let id = age::x25519::Identity::generate();
        let r = Recipient::parse(&format!("  {}\n", id.to_public())).unwrap();
        assert!(r.as_str().starts_with("age1"));
        // Several pieces of age's 64 KiB STREAM, written in odd sizes.
        let clear: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = MaybeEncrypted::new(Vec::new(), Some(&r)).unwrap();
        for part in clear.chunks(9_999) {
            w.write_all(part).unwrap();
        }
        let sealed = w.finish().unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        assert!(!sealed
            .windows(64)
            .any(|w| clear.windows(64).next() == Some(w)));
        assert_eq!(decrypt(&id, &sealed), clear);

        let other = age::x25519::Identity::generate();
        let d = age::Decryptor::new_buffered(&sealed[..]).unwrap();
        assert!(d
            .decrypt(std::iter::once(&other as &dyn age::Identity))
            .is_err());

        let clear_out = MaybeEncrypted::new(Vec::new(), None).unwrap();
        assert!(clear_out.finish().unwrap().is_empty());
    }

    #[test]
    fn a_bad_recipient_is_named() {
        for bad in ["", "age1notakey", "ssh-ed25519 AAAA", "AGE-SECRET-KEY-1XYZ"] {
            let e = Recipient::parse(bad).unwrap_err().to_string();
            assert!(e.contains("not an age X25519 recipient"), "{e}");
        }
    }
}
