//! Evidence encrypted with age (X25519): the collector's identity, payloads encrypted to it,
//! and streams decrypted with it. age because other tools read it: a chunk, an offline item
//! or a canary encrypted here decrypts with the `age` command and the identity file.

use std::io::{Read, Write};
use std::str::FromStr;

/// The magic line every age file starts with.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("evidence key: {0}")]
    Key(String),
    #[error("encrypting evidence: {0}")]
    Encrypt(String),
    #[error("decrypting evidence: {0} (was it encrypted to this collector's evidence key?)")]
    Decrypt(String),
}

/// The collector's evidence identity and its public recipient.
pub struct EvidenceKey {
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
}

impl EvidenceKey {
    /// A new identity.
    pub fn generate() -> EvidenceKey {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        EvidenceKey {
            identity,
            recipient,
        }
    }

    /// From an age identity file (`# comments` and one `AGE-SECRET-KEY-1…` line).
    pub fn parse(text: &str) -> Result<EvidenceKey, CryptError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| CryptError::Key("no AGE-SECRET-KEY line".into()))?;
        let identity =
            age::x25519::Identity::from_str(line).map_err(|e| CryptError::Key(e.to_string()))?;
        let recipient = identity.to_public();
        Ok(EvidenceKey {
            identity,
            recipient,
        })
    }

    /// The identity file's text, as `age-keygen` writes it.
    pub fn to_file_text(&self) -> String {
        use age::secrecy::ExposeSecret;
        format!(
            "# cairn collector evidence key (age X25519)\n# public key: {}\n{}\n",
            self.recipient,
            self.identity.to_string().expose_secret()
        )
    }

    /// `age1…`: what agents encrypt offline evidence to.
    pub fn recipient(&self) -> String {
        self.recipient.to_string()
    }

    /// Encrypt a payload to this key.
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, CryptError> {
        let e = |x: &dyn std::fmt::Display| CryptError::Encrypt(x.to_string());
        let enc = age::Encryptor::with_recipients(std::iter::once(
            &self.recipient as &dyn age::Recipient,
        ))
        .map_err(|x| e(&x))?;
        let mut out = Vec::with_capacity(plain.len() + 256);
        let mut w = enc.wrap_output(&mut out).map_err(|x| e(&x))?;
        w.write_all(plain).map_err(|x| e(&x))?;
        w.finish().map_err(|x| e(&x))?;
        Ok(out)
    }

    /// Decrypt a whole payload.
    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut out = Vec::with_capacity(cipher.len());
        self.decrypt_stream(cipher)?
            .read_to_end(&mut out)
            .map_err(|e| CryptError::Decrypt(e.to_string()))?;
        Ok(out)
    }

    /// A reader of the plaintext of an age stream, decrypted as it is read.
    pub fn decrypt_stream<R: Read>(&self, r: R) -> Result<impl Read, CryptError> {
        let d = age::Decryptor::new(r).map_err(|e| CryptError::Decrypt(e.to_string()))?;
        d.decrypt(std::iter::once(&self.identity as &dyn age::Identity))
            .map_err(|e| CryptError::Decrypt(e.to_string()))
    }
}

/// Whether bytes start like an age file.
pub fn is_age(bytes: &[u8]) -> bool {
    bytes.starts_with(AGE_MAGIC)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_a_foreign_key_cannot_read_them() {
        let k = EvidenceKey::generate();
        let again = EvidenceKey::parse(&k.to_file_text()).unwrap();
        assert_eq!(again.recipient(), k.recipient());
        assert!(k.recipient().starts_with("age1"));
        let c = k.encrypt(b"root:$6$salt$hash:19000:0:99999:7:::").unwrap();
        assert!(is_age(&c));
        assert_eq!(
            again.decrypt(&c).unwrap(),
            b"root:$6$salt$hash:19000:0:99999:7:::"
        );
        let other = EvidenceKey::generate();
        let e = other.decrypt(&c).unwrap_err().to_string();
        assert!(e.contains("this collector's evidence key"), "{e}");
        assert!(EvidenceKey::parse("# nothing\n").is_err());
    }
}
