//! FRP's control-connection cipher and token checks. After the login exchange both sides wrap
//! the control stream in AES-128-CFB (golib `crypto`): the key is PBKDF2-HMAC-SHA1 of the token
//! with salt `"frp"` (frpc and frps set golib's `DefaultSalt` so), 64 rounds, 16 bytes; each direction starts with its own random 16-byte
//! IV sent in the clear. The login's `privilege_key` is `hex(md5(token + timestamp))`.

use aes::Aes128;
use aes::cipher::KeyIvInit;
use md5::{Digest, Md5};

/// The PBKDF2 salt: frp overrides golib's default `"crypto"` with `"frp"` at start.
const SALT: &[u8] = b"frp";

type Enc = cfb_mode::BufEncryptor<Aes128>;
type Dec = cfb_mode::BufDecryptor<Aes128>;

/// The AES key frp derives from a token.
pub fn derive_key(token: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(token.as_bytes(), SALT, 64, &mut key);
    key
}

/// frp's `GetAuthKey`: what a client holding `token` sends at `timestamp`.
pub fn auth_key(token: &str, timestamp: i64) -> String {
    let mut h = Md5::new();
    h.update(token.as_bytes());
    h.update(timestamp.to_string().as_bytes());
    hex_lower(&h.finalize())
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The sending half: the first call returns the IV ahead of the ciphertext.
pub struct Encryptor {
    iv: Option<[u8; 16]>,
    enc: Enc,
}

impl Encryptor {
    pub fn new(key: &[u8; 16]) -> Self {
        let iv: [u8; 16] = rand::random();
        Self {
            iv: Some(iv),
            enc: Enc::new(key.into(), &iv.into()),
        }
    }

    /// The bytes to put on the wire for `plain`.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 16);
        if let Some(iv) = self.iv.take() {
            out.extend_from_slice(&iv);
        }
        let start = out.len();
        out.extend_from_slice(plain);
        self.enc.encrypt(&mut out[start..]);
        out
    }
}

/// The receiving half: takes the peer's IV from the first 16 bytes it is fed.
pub struct Decryptor {
    key: [u8; 16],
    iv: Vec<u8>,
    dec: Option<Dec>,
}

impl Decryptor {
    pub fn new(key: &[u8; 16]) -> Self {
        Self {
            key: *key,
            iv: Vec::with_capacity(16),
            dec: None,
        }
    }

    /// Plain bytes for the wire bytes `data` (possibly none yet, while the IV is incomplete).
    pub fn open(&mut self, mut data: &[u8]) -> Vec<u8> {
        if self.dec.is_none() {
            let need = 16 - self.iv.len();
            let n = need.min(data.len());
            self.iv.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.iv.len() < 16 {
                return Vec::new();
            }
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&self.iv);
            self.dec = Some(Dec::new((&self.key).into(), &iv.into()));
        }
        let mut out = data.to_vec();
        if let Some(dec) = &mut self.dec {
            dec.decrypt(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_key_is_md5_of_token_and_time() {
        // md5("abc123") as computed by any md5 tool.
        assert_eq!(auth_key("abc", 123), "e99a18c428cb38d5f260853678922e03");
    }

    #[test]
    fn cipher_round_trips_in_pieces() {
        let key = derive_key("secret");
        let mut e = Encryptor::new(&key);
        let mut wire = e.seal(b"hello ");
        wire.extend(e.seal(b"world, in parts"));
        assert_eq!(wire.len(), 16 + 21);
        let mut d = Decryptor::new(&key);
        let mut plain = Vec::new();
        for chunk in wire.chunks(5) {
            plain.extend(d.open(chunk));
        }
        assert_eq!(plain, b"hello world, in parts");
        let mut wrong = Decryptor::new(&derive_key("other"));
        assert_ne!(wrong.open(&wire), b"hello world, in parts");
    }
}
