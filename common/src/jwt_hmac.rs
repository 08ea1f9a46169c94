//! The only cryptography these tokens need, as jsonwebtoken's process-wide `CryptoProvider`: the
//! HMAC family (HS256, which the key ring pins for verification, and HS384/HS512, which the tests
//! forge tokens with). jsonwebtoken's own backends bring every algorithm it knows: the RustCrypto
//! one puts the `rsa` crate in the build (RUSTSEC-2023-0071, a timing side channel with no fixed
//! release, which every dependency scanner flags although HS256 never reaches it), the aws-lc one
//! a C library. Any other algorithm is refused here before a key is looked at.

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::{Sha256, Sha384, Sha512};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs the provider for this process; later calls (tests start several services in one
/// process) find it installed and change nothing.
pub fn install() {
    let _ = PROVIDER.install_default();
}

fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Ok(Box::new(HmacKey::new(*algorithm, key.as_bytes())?))
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(HmacKey::new(*algorithm, key.try_get_as_bytes()?)?))
}

/// One key of one HMAC algorithm, signing and verifying.
enum HmacKey {
    Hs256(Hmac<Sha256>),
    Hs384(Hmac<Sha384>),
    Hs512(Hmac<Sha512>),
}

impl HmacKey {
    fn new(algorithm: Algorithm, secret: &[u8]) -> Result<Self> {
        let bad_key = |_| ErrorKind::InvalidKeyFormat;
        Ok(match algorithm {
            Algorithm::HS256 => Self::Hs256(Hmac::new_from_slice(secret).map_err(bad_key)?),
            Algorithm::HS384 => Self::Hs384(Hmac::new_from_slice(secret).map_err(bad_key)?),
            Algorithm::HS512 => Self::Hs512(Hmac::new_from_slice(secret).map_err(bad_key)?),
            _ => return Err(ErrorKind::InvalidAlgorithm.into()),
        })
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hs256(_) => Algorithm::HS256,
            Self::Hs384(_) => Algorithm::HS384,
            Self::Hs512(_) => Algorithm::HS512,
        }
    }
}

/// Runs `$body` with `$mac`, a fresh copy of the key's MAC whatever its hash.
macro_rules! with_mac {
    ($key:expr, $mac:ident => $body:expr) => {
        match $key {
            HmacKey::Hs256(m) => {
                let mut $mac = m.clone();
                $body
            }
            HmacKey::Hs384(m) => {
                let mut $mac = m.clone();
                $body
            }
            HmacKey::Hs512(m) => {
                let mut $mac = m.clone();
                $body
            }
        }
    };
}

impl Signer<Vec<u8>> for HmacKey {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, SignatureError> {
        Ok(with_mac!(self, mac => {
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }))
    }
}

impl Verifier<Vec<u8>> for HmacKey {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), SignatureError> {
        // `verify_slice` compares in constant time.
        with_mac!(self, mac => {
            mac.update(message);
            mac.verify_slice(signature).map_err(SignatureError::from_source)
        })
    }
}

impl JwtSigner for HmacKey {
    fn algorithm(&self) -> Algorithm {
        HmacKey::algorithm(self)
    }
}

impl JwtVerifier for HmacKey {
    fn algorithm(&self) -> Algorithm {
        HmacKey::algorithm(self)
    }
}
