//! Refresh tokens: 256 random bits, handed out once, stored only as their SHA-256.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A freshly minted token: the value for the client and the hash for the database.
pub struct NewRefreshToken {
    pub value: String,
    pub hash: Vec<u8>,
}

pub fn mint() -> NewRefreshToken {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let value = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&value);
    NewRefreshToken { value, hash }
}

/// What the database stores and looks tokens up by. Any string hashes, so any string a client
/// sends is looked up and, if unknown, is a 401 rather than a 400.
pub fn hash(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_256_bit_values_and_hash_deterministically() {
        let a = mint();
        let b = mint();
        assert_ne!(a.value, b.value);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.value).unwrap().len(), 32);
        assert_eq!(hash(&a.value), a.hash);
        assert_eq!(a.hash.len(), 32);
        assert_ne!(a.hash, a.value.as_bytes());
    }
}
