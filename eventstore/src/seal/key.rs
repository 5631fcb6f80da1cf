//! The Ed25519 key that signs seals.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;

/// The seal signing key: from `FULCRUM_SEAL_KEY` (a PKCS#8 PEM, or the path
/// of a file holding one), or made up for this run only (`--dev`).
#[derive(Clone)]
pub struct SealKey {
    signing: SigningKey,
    ephemeral: bool,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half.
        f.debug_struct("SealKey")
            .field("public_key", &self.public_key_hex())
            .field("ephemeral", &self.ephemeral)
            .finish()
    }
}

/// A seal key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SealKeyError {
    /// The value is neither a PEM nor a readable file.
    #[error("FULCRUM_SEAL_KEY is neither a PEM nor a readable file ({0})")]
    Unreadable(String),
    /// The PEM is not a PKCS#8 Ed25519 private key.
    #[error("FULCRUM_SEAL_KEY is not a PKCS#8 Ed25519 private key PEM: {0}")]
    NotEd25519(String),
}

impl SealKey {
    /// Reads `value`: a PEM (`-----BEGIN PRIVATE KEY-----` ...) or the
    /// path of a file that holds one.
    pub fn parse(value: &str) -> Result<SealKey, SealKeyError> {
        let pem = if value.trim_start().starts_with("-----BEGIN") {
            value.to_owned()
        } else {
            std::fs::read_to_string(value.trim())
                .map_err(|e| SealKeyError::Unreadable(format!("{}: {e}", value.trim())))?
        };
        let signing = SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| SealKeyError::NotEd25519(e.to_string()))?;
        Ok(SealKey {
            signing,
            ephemeral: false,
        })
    }

    /// A fresh random key that lives as long as this process.
    pub fn ephemeral() -> SealKey {
        SealKey {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
            ephemeral: true,
        }
    }

    /// Whether the key was made up for this run.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The private key as a PKCS#8 PEM (what `FULCRUM_SEAL_KEY` takes).
    pub fn to_pem(&self) -> Result<String, SealKeyError> {
        self.signing
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .map_err(|e| SealKeyError::NotEd25519(e.to_string()))
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The public key, hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_pem_and_a_file() {
        let key = SealKey::ephemeral();
        let pem = key.to_pem().unwrap_or_default();
        let parsed = SealKey::parse(&pem).map(|k| k.public_key_hex()).ok();
        assert_eq!(parsed.as_deref(), Some(key.public_key_hex().as_str()));

        let path = std::env::temp_dir().join(format!("seal-key-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, &pem).ok();
        let from_file = SealKey::parse(path.to_str().unwrap_or_default())
            .map(|k| k.public_key_hex())
            .ok();
        let _ = std::fs::remove_file(&path);
        assert_eq!(from_file, Some(key.public_key_hex()));
        assert!(!SealKey::parse(&pem)
            .map(|k| k.is_ephemeral())
            .unwrap_or(true));
    }

    #[test]
    fn other_values_are_refused_with_a_reason() {
        assert!(matches!(
            SealKey::parse("/no/such/file.pem"),
            Err(SealKeyError::Unreadable(_))
        ));
        assert!(matches!(
            SealKey::parse("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(SealKeyError::NotEd25519(_))
        ));
    }
}
