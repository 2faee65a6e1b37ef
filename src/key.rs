//! API keys: the secret [`ApiKey`], its [`KeyPrefix`], its [`KeyDigest`], and the ids of
//! keys and accounts.
//!
//! A key is its prefix (Nouvel's `nvl_`), then 22 base62 characters from the OS CSPRNG
//! (131 bits), then a 6-character base62 CRC32 of everything before it: 32 ASCII characters
//! with Nouvel's prefix. The checksum lets the layer turn away a typo or a made-up string
//! before it hashes anything or asks the store.
//!
//! ```
//! use nouvel_auth::{key::ApiKey, KeyPrefix};
//!
//! let key = ApiKey::generate();
//! assert!(key.expose_secret().starts_with("nvl_"));
//! assert_eq!(key.expose_secret().len(), 32);
//!
//! // Parsing checks prefix, charset, length and checksum.
//! let again = ApiKey::parse(key.expose_secret()).unwrap();
//! assert_eq!(again.digest(), key.digest());
//!
//! // An application's own prefix: the checksum covers it too.
//! let prefix = KeyPrefix::new("acme_live_").unwrap();
//! let own = prefix.generate();
//! assert!(prefix.parse(own.expose_secret()).is_ok());
//! assert!(ApiKey::parse(own.expose_secret()).is_err());
//!
//! // `Debug` never shows the secret.
//! let shown = format!("{key:?}");
//! assert!(!shown.contains(key.expose_secret()));
//! ```

use std::{fmt, hash::Hash, sync::Arc};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::environment::{Environment, InvalidEnvironment};

const RANDOM_LEN: usize = 22;
const CHECKSUM_LEN: usize = 6;
const MAX_PREFIX_LEN: usize = 16;
const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + RANDOM_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What every key of an application starts with: 1 to 16 characters of `a-z`, `0-9` and
/// `_`, starting with a letter (Nouvel's is `nvl_`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyPrefix {
    bytes: [u8; MAX_PREFIX_LEN],
    len: u8,
}

/// A prefix that breaks the rule of [`KeyPrefix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key prefix is 1 to 16 characters of a-z, 0-9 and _, starting with a letter")]
pub struct InvalidPrefix;

impl KeyPrefix {
    /// Nouvel's: `nvl_`.
    pub const NOUVEL: Self = match Self::new("nvl_") {
        Ok(prefix) => prefix,
        Err(_) => unreachable!(),
    };

    /// The prefix `prefix`; usable in a `const`:
    ///
    /// ```
    /// use nouvel_auth::KeyPrefix;
    ///
    /// const WEATHER: KeyPrefix = match KeyPrefix::new("wx_") {
    ///     Ok(prefix) => prefix,
    ///     Err(_) => panic!("not a key prefix"),
    /// };
    /// assert_eq!(WEATHER.as_str(), "wx_");
    /// ```
    pub const fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let text = prefix.as_bytes();
        if text.is_empty() || text.len() > MAX_PREFIX_LEN || !text[0].is_ascii_lowercase() {
            return Err(InvalidPrefix);
        }
        let mut bytes = [0; MAX_PREFIX_LEN];
        let mut i = 0;
        while i < text.len() {
            let c = text[i];
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_') {
                return Err(InvalidPrefix);
            }
            bytes[i] = c;
            i += 1;
        }
        Ok(Self {
            bytes,
            len: text.len() as u8,
        })
    }

    /// The prefix as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("ASCII by construction")
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// How long each key with this prefix is.
    #[must_use]
    pub fn key_len(&self) -> usize {
        usize::from(self.len) + RANDOM_LEN + CHECKSUM_LEN
    }

    /// The regular expression of keys with this prefix, as secret scanners take it (GitHub's
    /// partner program asks for one): the prefix, then 28 characters of `[0-9A-Za-z]`.
    ///
    /// ```
    /// use nouvel_auth::KeyPrefix;
    ///
    /// assert_eq!(KeyPrefix::NOUVEL.pattern(), "nvl_[0-9A-Za-z]{28}");
    /// ```
    #[must_use]
    pub fn pattern(&self) -> String {
        format!(
            "{}[0-9A-Za-z]{{{}}}",
            self.as_str(),
            RANDOM_LEN + CHECKSUM_LEN
        )
    }

    /// Makes a new key from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// Panics only if the operating system cannot provide randomness, in which
    /// case no key could be made safely.
    #[must_use]
    pub fn generate(&self) -> ApiKey {
        let prefix = usize::from(self.len);
        let mut key = ApiKey {
            bytes: [0; MAX_KEY_LEN],
            len: self.key_len() as u8,
            prefix: self.len,
        };
        key.bytes[..prefix].copy_from_slice(self.as_bytes());
        fill_base62(&mut key.bytes[prefix..prefix + RANDOM_LEN]);
        let crc = crc32fast::hash(&key.bytes[..prefix + RANDOM_LEN]);
        encode_checksum(
            crc,
            &mut key.bytes[prefix + RANDOM_LEN..usize::from(key.len)],
        );
        key
    }

    /// Parses a presented key, checking length, prefix, charset and checksum. This does
    /// no I/O and no hashing.
    pub fn parse(&self, key: &str) -> Result<ApiKey, KeyFormatError> {
        self.parse_bytes(key.as_bytes())
    }

    /// [`parse`](Self::parse) for bytes straight from a header: a key is ASCII, so no
    /// UTF-8 check is needed first.
    pub(crate) fn parse_bytes(&self, bytes: &[u8]) -> Result<ApiKey, KeyFormatError> {
        let prefix = usize::from(self.len);
        if bytes.len() != self.key_len() {
            return Err(KeyFormatError::Length(*self));
        }
        if &bytes[..prefix] != self.as_bytes() {
            return Err(KeyFormatError::Prefix(*self));
        }
        if !every_byte(&bytes[prefix..], u8::is_ascii_alphanumeric) {
            return Err(KeyFormatError::Charset(*self));
        }
        let (body, checksum) = bytes.split_at(prefix + RANDOM_LEN);
        let mut expected = [0u8; CHECKSUM_LEN];
        encode_checksum(crc32fast::hash(body), &mut expected);
        if checksum != expected {
            return Err(KeyFormatError::Checksum);
        }
        let mut key = ApiKey {
            bytes: [0; MAX_KEY_LEN],
            len: self.key_len() as u8,
            prefix: self.len,
        };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(key)
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        Self::NOUVEL
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPrefix({})", self.as_str())
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plaintext API key (`nvl_…`): a secret.
///
/// It has no `Display`; its `Debug` shows only the [display prefix](Self::display_prefix).
/// The plaintext is reachable only through [`expose_secret`](Self::expose_secret), which the
/// crate calls in exactly one place: when a new key is shown to its owner.
#[derive(Clone)]
pub struct ApiKey {
    bytes: [u8; MAX_KEY_LEN],
    len: u8,
    prefix: u8,
}

/// Why a string is not a well-formed API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// The string is not as long as a key with the prefix is.
    #[error("an API key is {} characters long", .0.key_len())]
    Length(KeyPrefix),
    /// The string does not start with the prefix.
    #[error("an API key starts with `{0}`")]
    Prefix(KeyPrefix),
    /// A character after the prefix is not in `[0-9A-Za-z]`.
    #[error("an API key holds only the characters 0-9, A-Z and a-z after `{0}`")]
    Charset(KeyPrefix),
    /// The last six characters are not the checksum of the rest.
    #[error("the API key's checksum does not match; check for a typo")]
    Checksum,
}

impl ApiKey {
    /// Makes a new key with Nouvel's prefix; see [`KeyPrefix::generate`].
    #[must_use]
    pub fn generate() -> Self {
        KeyPrefix::NOUVEL.generate()
    }

    /// Parses a key with Nouvel's prefix; see [`KeyPrefix::parse`].
    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        KeyPrefix::NOUVEL.parse(s)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The plaintext. Show it to the key's owner once, at creation; never log it.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("keys are ASCII by construction")
    }

    /// The prefix and the next four characters (`nvl_AbCd`): enough for a person to tell
    /// keys apart, far too little to guess one.
    #[must_use]
    pub fn display_prefix(&self) -> &str {
        &self.expose_secret()[..usize::from(self.prefix) + 4]
    }

    /// The SHA-256 digest of the key, as stores keep it (see [`KeyHasher`] for a peppered one).
    #[must_use]
    pub fn digest(&self) -> KeyDigest {
        KeyHasher::Sha256.digest(self)
    }
}

/// Whether every byte passes `test`. It looks at all of them rather than stopping at the
/// first failure, so the compiler checks many bytes per instruction: a presented key is
/// checked twice on every request.
pub(crate) fn every_byte(bytes: &[u8], test: fn(&u8) -> bool) -> bool {
    bytes.iter().fold(true, |all, byte| all & test(byte))
}

impl Drop for ApiKey {
    fn drop(&mut self) {
        // Leave no copy of the secret in freed memory.
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

/// Fills `out` with uniformly random base62 characters (rejection sampling, so no bias).
fn fill_base62(out: &mut [u8]) {
    let mut filled = 0;
    let mut pool = [0u8; 64];
    while filled < out.len() {
        getrandom::fill(&mut pool).expect("the OS CSPRNG is available");
        // 248 = 4 × 62: bytes at or above it would favour the first characters.
        for byte in pool.iter().filter(|&&b| b < 248) {
            if filled == out.len() {
                break;
            }
            out[filled] = BASE62[usize::from(byte % 62)];
            filled += 1;
        }
    }
}

/// Writes `crc` as fixed-width base62, most significant digit first (62^6 > 2^32).
fn encode_checksum(mut crc: u32, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
}

/// Makes an opaque id such as `key_…` or `acc_…`: a prefix and 16 random base62 characters.
pub(crate) fn random_id(prefix: &str) -> Arc<str> {
    let mut random = [0u8; 16];
    fill_base62(&mut random);
    let mut id = String::with_capacity(prefix.len() + random.len());
    id.push_str(prefix);
    id.extend(random.iter().map(|&b| char::from(b)));
    id.into()
}

/// The digest of an API key: what stores keep and look up instead of the key.
///
/// Equality is constant-time, so comparing a presented digest with a stored one
/// tells an observer nothing about how many bytes matched.
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// Wraps 32 digest bytes read back from a store.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's bytes, to write into a store.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        // Four constant-time word comparisons rather than 32 byte ones: same guarantee.
        let words = |d: &[u8; 32]| -> [u64; 4] {
            std::array::from_fn(|i| {
                u64::from_ne_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
            })
        };
        words(&self.0).ct_eq(&words(&other.0)).into()
    }
}

impl Eq for KeyDigest {}

impl Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // A digest is uniform already: one word of it hashes as well as all 32 bytes, and
        // the maps' seeded hashers still mix it, so nobody can aim keys at one bucket.
        state.write_u64(u64::from_ne_bytes(self.0[..8].try_into().expect("8 bytes")));
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not the key, but an unsalted one still identifies it: show little.
        write!(f, "KeyDigest({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// How keys are turned into [`KeyDigest`]s.
///
/// Plain SHA-256 is the default. With a server-side pepper (HMAC-SHA-256), a leaked
/// table of digests cannot even be checked against a guessed key without the pepper.
/// The layer asks the store for digests ([`KeyStore::digest`](crate::KeyStore::digest)),
/// so stores and layer always agree.
///
/// ```
/// use nouvel_auth::{key::ApiKey, key::KeyHasher};
///
/// let key = ApiKey::generate();
/// let peppered = KeyHasher::hmac_sha256(b"server-side pepper");
/// assert_ne!(peppered.digest(&key), KeyHasher::Sha256.digest(&key));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum KeyHasher {
    /// SHA-256 of the key.
    #[default]
    Sha256,
    /// HMAC-SHA-256 of the key under a secret pepper.
    HmacSha256(Hmac<Sha256>),
}

impl KeyHasher {
    /// An HMAC-SHA-256 hasher keyed with `pepper`.
    #[must_use]
    pub fn hmac_sha256(pepper: &[u8]) -> Self {
        Self::HmacSha256(Hmac::new_from_slice(pepper).expect("HMAC accepts keys of any length"))
    }

    /// The digest of `key`.
    #[must_use]
    pub fn digest(&self, key: &ApiKey) -> KeyDigest {
        match self {
            Self::Sha256 => KeyDigest(Sha256::digest(key.as_bytes()).into()),
            Self::HmacSha256(mac) => {
                let mut mac = mac.clone();
                mac.update(key.as_bytes());
                KeyDigest(mac.finalize().into_bytes().into())
            }
        }
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sha256 => "Sha256",
            Self::HmacSha256(_) => "HmacSha256(<pepper>)",
        })
    }
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cloning is cheap (a shared string).
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.into())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id.into())
            }
        }

        impl From<Arc<str>> for $name {
            fn from(id: Arc<str>) -> Self {
                Self(id)
            }
        }
    };
}

opaque_id! {
    /// The id of an API key: not secret, safe to log, stable across rotations of nothing
    /// (a rotation makes a key with a new id).
    KeyId
}

opaque_id! {
    /// The id of an account, which owns keys and has a [`Plan`](crate::Plan).
    AccountId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(ApiKey::parse(a.expose_secret()).is_ok());
    }

    #[test]
    fn every_malformation_is_named() {
        let good = ApiKey::generate();
        let good = good.expose_secret();
        let nvl = KeyPrefix::NOUVEL;
        assert_eq!(ApiKey::parse("").unwrap_err(), KeyFormatError::Length(nvl));
        assert_eq!(
            ApiKey::parse(&good[1..]).unwrap_err(),
            KeyFormatError::Length(nvl)
        );
        assert_eq!(
            ApiKey::parse(&good.replacen("nvl_", "nvk_", 1)).unwrap_err(),
            KeyFormatError::Prefix(nvl)
        );
        let mut bad_char = good.to_owned();
        bad_char.replace_range(10..11, "-");
        assert_eq!(
            ApiKey::parse(&bad_char).unwrap_err(),
            KeyFormatError::Charset(nvl)
        );
        // One changed character of the random part breaks the checksum.
        let mut typo = good.as_bytes().to_vec();
        typo[8] = if typo[8] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(ApiKey::parse(&typo).unwrap_err(), KeyFormatError::Checksum);
    }

    #[test]
    fn a_prefix_of_its_own_is_checked_and_covered_by_the_checksum() {
        let prefix = KeyPrefix::new("sk_test_").unwrap();
        let key = prefix.generate();
        assert_eq!(key.expose_secret().len(), prefix.key_len());
        assert_eq!(key.display_prefix().len(), 12);
        assert_eq!(
            prefix.parse(key.expose_secret()).unwrap().digest(),
            key.digest()
        );
        // Another prefix of the same length with the same rest fails the checksum.
        let moved = key.expose_secret().replacen("sk_test_", "sk_live_", 1);
        assert_eq!(
            KeyPrefix::new("sk_live_")
                .unwrap()
                .parse(&moved)
                .unwrap_err(),
            KeyFormatError::Checksum
        );
        for bad in ["", "Upper_", "1abc", "with space", "seventeen_chars__"] {
            assert_eq!(KeyPrefix::new(bad), Err(InvalidPrefix), "{bad}");
        }
    }

    #[test]
    fn debug_shows_only_the_prefix() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.display_prefix()));
        assert!(!shown.contains(&key.expose_secret()[8..]));
        assert_eq!(key.display_prefix().len(), 8);
    }

    #[test]
    fn base62_alphabet_is_uniformly_used() {
        let mut seen = [false; 62];
        for _ in 0..200 {
            for &b in &ApiKey::generate().bytes[4..26] {
                seen[BASE62.iter().position(|&c| c == b).unwrap()] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
