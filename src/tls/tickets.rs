//! TLS session tickets (stateless resumption, TLS 1.3 and 1.2) with keys sluice controls:
//! random keys rotated every `rotation` (a key encrypts for one period and still decrypts for
//! the next, as rustls' own rotator does), or keys read from a file that every instance of a
//! fleet shares (`tls.session_tickets.keys`), re-read when it changes like certificates.
//!
//! The key file: one key a line, base64 of 48 bytes (a 16-byte name, then a 32-byte
//! ChaCha20-Poly1305 key), e.g. `openssl rand 48 | base64 -w0`. The first line encrypts,
//! every line decrypts: an operator rotates by adding a new first line on every instance,
//! then, a ticket lifetime later, dropping the last. The ticket layout and AEAD are rustls'
//! (`ring`): name, random nonce, ciphertext and tag, the name authenticated as AAD.

use arc_swap::ArcSwap;
use base64::Engine;
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

struct Key {
    name: [u8; NAME_LEN],
    key: aead::LessSafeKey,
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Option<Key> {
        let name: [u8; NAME_LEN] = bytes.get(..NAME_LEN)?.try_into().ok()?;
        let raw = bytes.get(NAME_LEN..NAME_LEN + KEY_LEN)?;
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, raw).ok()?;
        Some(Key {
            name,
            key: aead::LessSafeKey::new(unbound),
        })
    }

    fn random() -> Option<Key> {
        let mut bytes = [0u8; NAME_LEN + KEY_LEN];
        SystemRandom::new().fill(&mut bytes).ok()?;
        Key::from_bytes(&bytes)
    }
}

/// The keys in force: `keys[0]` encrypts, all decrypt.
struct Keys {
    keys: Vec<Arc<Key>>,
    /// When random keys rotate next (`None` for keys from a file).
    rotate_at: Option<Instant>,
}

pub struct Ticketer {
    keys: ArcSwap<Keys>,
    /// Random keys' period; `None` with a key file.
    rotation: Option<Duration>,
    file: Option<PathBuf>,
    lifetime: u32,
    rotating: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Ticketer")
            .field("rotation", &self.rotation)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Ticketer {
    /// Random keys, a new one every `rotation`; a ticket is good for two periods.
    pub fn rotating(rotation: Duration) -> Result<Arc<Ticketer>, String> {
        let key = Key::random().ok_or("no randomness for a ticket key")?;
        Ok(Arc::new(Ticketer {
            keys: ArcSwap::from_pointee(Keys {
                keys: vec![Arc::new(key)],
                rotate_at: Some(Instant::now() + rotation),
            }),
            rotation: Some(rotation),
            file: None,
            lifetime: u32::try_from((rotation * 2).as_secs()).unwrap_or(u32::MAX),
            rotating: std::sync::Mutex::new(()),
        }))
    }

    /// Keys from `path` (see the module header); `lifetime` is the hint given to clients.
    pub fn from_file(path: &Path, lifetime: Duration) -> Result<Arc<Ticketer>, String> {
        let keys = read_keys(path)?;
        Ok(Arc::new(Ticketer {
            keys: ArcSwap::from_pointee(Keys {
                keys,
                rotate_at: None,
            }),
            rotation: None,
            file: Some(path.to_path_buf()),
            lifetime: u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX),
            rotating: std::sync::Mutex::new(()),
        }))
    }

    /// Encrypts and decrypts with `old`'s keys from now on, when both are random keys with
    /// the same period (a reload that kept the listener's settings): tickets issued before
    /// the reload stay good. Keys from a file need nothing: the file is the same.
    pub fn carry(&self, old: &Ticketer) {
        if self.file.is_none() && old.file.is_none() && self.rotation == old.rotation {
            self.keys.store(old.keys.load_full());
        }
    }

    /// The key file, if the keys come from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the key file: `Ok(true)` when the keys changed, `Err` (the keys in force
    /// stay) when the file is not a good key file.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let keys = read_keys(path)?;
        let current = self.keys.load();
        let same = keys.len() == current.keys.len()
            && keys
                .iter()
                .zip(&current.keys)
                .all(|(a, b)| a.name == b.name);
        if !same {
            self.keys.store(Arc::new(Keys {
                keys,
                rotate_at: None,
            }));
        }
        Ok(!same)
    }

    /// Rotates random keys when their period is over: the current key moves to decrypting
    /// only, the one before it is dropped.
    fn roll(&self) -> arc_swap::Guard<Arc<Keys>> {
        let keys = self.keys.load();
        let (Some(at), Some(rotation)) = (keys.rotate_at, self.rotation) else {
            return keys;
        };
        let now = Instant::now();
        if now < at {
            return keys;
        }
        let Ok(_one) = self.rotating.try_lock() else {
            // Another thread is rotating: use what is there.
            return keys;
        };
        let current = self.keys.load();
        if current.rotate_at.is_some_and(|at| now < at) {
            return current;
        }
        let Some(fresh) = Key::random() else {
            return current;
        };
        let previous = current.keys.first().cloned();
        self.keys.store(Arc::new(Keys {
            keys: std::iter::once(Arc::new(fresh)).chain(previous).collect(),
            rotate_at: Some(now + rotation),
        }));
        self.keys.load()
    }
}

fn read_keys(path: &Path) -> Result<Vec<Arc<Key>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|e| format!("{}:{}: not base64: {e}", path.display(), number + 1))?;
        if bytes.len() != NAME_LEN + KEY_LEN {
            return Err(format!(
                "{}:{}: a key is {} bytes (16 name + 32 key), this line has {}",
                path.display(),
                number + 1,
                NAME_LEN + KEY_LEN,
                bytes.len()
            ));
        }
        keys.extend(Key::from_bytes(&bytes).map(Arc::new));
    }
    if keys.is_empty() {
        return Err(format!("{}: no key in the file", path.display()));
    }
    Ok(keys)
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, message: &[u8]) -> Option<Vec<u8>> {
        let keys = self.roll();
        let key = keys.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + message.len() + TAG_LEN);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(message);
        let tag = key
            .key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(key.name),
                &mut out[NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let keys = self.roll();
        let name = ticket.get(..NAME_LEN)?;
        let nonce = ticket.get(NAME_LEN..NAME_LEN + NONCE_LEN)?;
        // The name picks the key; comparing it leaks nothing the ticket does not show.
        let key = keys.keys.iter().find(|k| k.name == name)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut out = ticket.get(NAME_LEN + NONCE_LEN..)?.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, aead::Aad::from(key.name), &mut out)
            .ok()?
            .len();
        out.truncate(plain);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_line(seed: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([seed; NAME_LEN + KEY_LEN])
    }

    #[tokio::test(start_paused = true)]
    async fn random_keys_rotate_and_the_previous_one_still_decrypts() {
        let ticketer = Ticketer::rotating(Duration::from_secs(60)).unwrap();
        assert_eq!(ticketer.lifetime(), 120);
        let first = ticketer.encrypt(b"session").unwrap();
        assert_eq!(ticketer.decrypt(&first).unwrap(), b"session");
        tokio::time::advance(Duration::from_secs(61)).await;
        let second = ticketer.encrypt(b"later").unwrap();
        assert_ne!(first[..NAME_LEN], second[..NAME_LEN], "a new key encrypts");
        assert_eq!(
            ticketer.decrypt(&first).unwrap(),
            b"session",
            "the previous decrypts"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(ticketer.decrypt(&first).is_none(), "two periods on: gone");
        assert_eq!(ticketer.decrypt(&second).unwrap(), b"later");
        let mut forged = second.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(ticketer.decrypt(&forged).is_none());
        assert!(ticketer.decrypt(&second[..10]).is_none());
    }

    #[test]
    fn keys_from_a_file_are_shared_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ticket.keys");
        std::fs::write(&path, format!("{}\n", key_line(1))).unwrap();
        let one = Ticketer::from_file(&path, Duration::from_secs(3600)).unwrap();
        let two = Ticketer::from_file(&path, Duration::from_secs(3600)).unwrap();
        let ticket = one.encrypt(b"fleet").unwrap();
        assert_eq!(
            two.decrypt(&ticket).unwrap(),
            b"fleet",
            "another instance decrypts"
        );
        // A new first key: encrypts; the old one still decrypts.
        std::fs::write(
            &path,
            format!("# rotated\n{}\n{}\n", key_line(2), key_line(1)),
        )
        .unwrap();
        assert_eq!(two.reload(), Ok(true));
        assert_eq!(two.reload(), Ok(false), "unchanged");
        assert_eq!(two.decrypt(&ticket).unwrap(), b"fleet");
        assert_eq!(two.encrypt(b"x").unwrap()[..NAME_LEN], [2; NAME_LEN]);
        // A bad file keeps the keys in force.
        std::fs::write(&path, "short\n").unwrap();
        assert!(two.reload().is_err());
        assert_eq!(two.decrypt(&ticket).unwrap(), b"fleet");
        std::fs::write(
            &path,
            format!(
                "{}\n",
                base64::engine::general_purpose::STANDARD.encode([0u8; 20])
            ),
        )
        .unwrap();
        assert!(
            Ticketer::from_file(&path, Duration::from_secs(1))
                .unwrap_err()
                .contains(":1: a key is 48 bytes")
        );
    }
}
