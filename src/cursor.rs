//! The one codec of every paging cursor the API hands out (`/scores`, `/alerts/events`,
//! `/webhooks/deliveries`): sealed, so that a cursor is opaque and cannot be forged or edited,
//! and bound to the query and the caller it was issued for.
//!
//! Owns the sealing and the binding text (a digest of the query's filters and the caller). It
//! does not know what a position is (each route serialises its own) nor how a refused cursor is
//! answered (each route maps `None` to its 400).

use aws_lc_rs::rand::SecureRandom as _;
use aws_lc_rs::{aead, digest, rand as lc_rand};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// Length of a cursor key (AES-256).
const CURSOR_KEY_BYTES: usize = 32;

/// Seals and opens cursors: AES-256-GCM with a random nonce per cursor, so that a cursor is
/// opaque (it names no tenant, no score, no position in a table) and cannot be forged or edited.
/// The binding (see [`CursorCodec::binding`]), which includes the caller, is the associated
/// data: a cursor opens only for the query and the API key it was issued to, and otherwise is
/// refused like garbage.
///
/// The key comes from `[server] cursor_key` (then cursors survive restarts and work on every
/// replica sharing it), else is random per process.
pub struct CursorCodec {
    key: aead::LessSafeKey,
    rng: lc_rand::SystemRandom,
}

impl fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.write_str("CursorCodec")
    }
}

impl CursorCodec {
    /// A codec whose key is derived from a configured secret (SHA-256 of a domain label and the
    /// secret, so that any high-entropy text makes a full-strength key).
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(b"scoregate cursor key v1\0");
        context.update(secret);
        Self::with_key(context.finish().as_ref())
    }

    /// A codec with a random key: cursors do not survive a restart nor work on another replica.
    pub fn random() -> Self {
        let mut key = [0u8; CURSOR_KEY_BYTES];
        if lc_rand::SystemRandom::new().fill(&mut key).is_err() {
            // No system randomness: fall back to the thread RNG rather than fail.
            key = rand::random();
        }
        Self::with_key(&key)
    }

    fn with_key(bytes: &[u8]) -> Self {
        // A 32-byte key is always a valid AES-256 key.
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, bytes)
            .map(aead::LessSafeKey::new)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM takes any 32-byte key"));
        Self {
            key,
            rng: lc_rand::SystemRandom::new(),
        }
    }

    /// The binding of a query: a digest of a canonical JSON text of what selects and orders its
    /// items and of who asked (`parts`; the route's name first, so that a cursor of one route
    /// never opens on another).
    pub fn binding(parts: &serde_json::Value) -> String {
        let canonical = parts.to_string();
        URL_SAFE_NO_PAD
            .encode(&digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref()[..16])
    }

    /// `base64url(nonce ‖ ciphertext ‖ tag)` of the position's JSON, bound to `binding`.
    pub fn encode<T: Serialize>(&self, position: &T, binding: &str) -> String {
        let mut nonce = [0u8; aead::NONCE_LEN];
        if self.rng.fill(&mut nonce).is_err() {
            nonce = rand::random();
        }
        let mut sealed = serde_json::to_vec(position).unwrap_or_default();
        let aad = aead::Aad::from(binding.as_bytes());
        if self
            .key
            .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aad, &mut sealed)
            .is_err()
        {
            // Sealing a few hundred bytes does not fail; an empty cursor would be refused later.
            return String::new();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The position sealed in `cursor`, or `None` when it was not issued by this codec for this
    /// `binding` (garbage, edited, another query's or another caller's).
    pub fn decode<T: DeserializeOwned>(&self, cursor: &str, binding: &str) -> Option<T> {
        let mut bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if bytes.len() < aead::NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return None;
        }
        let mut sealed = bytes.split_off(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(&bytes).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(binding.as_bytes()), &mut sealed)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips_only_under_its_binding() {
        let codec = CursorCodec::random();
        let binding = CursorCodec::binding(&serde_json::json!(["events", "low", "portal"]));
        let other = CursorCodec::binding(&serde_json::json!(["events", "high", "portal"]));
        let cursor = codec.encode(&42_i64, &binding);
        assert_eq!(codec.decode::<i64>(&cursor, &binding), Some(42));
        assert_eq!(codec.decode::<i64>(&cursor, &other), None);
        assert_eq!(
            codec.decode::<String>(&cursor, &binding),
            None,
            "another type"
        );
        assert_eq!(CursorCodec::random().decode::<i64>(&cursor, &binding), None);
    }
}
