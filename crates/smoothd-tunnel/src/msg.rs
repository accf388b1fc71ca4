//! FRP's control messages: one type byte, the body's length as a big-endian i64, then the
//! body as JSON (golib `msg/json`). Only the messages frpc's `tcp` proxy exchanges are known
//! here; any other type is an error. Bodies are capped at [`MAX_LEN`] bytes, as in frp.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TunnelError;

/// frp's own limit on one message body.
pub const MAX_LEN: usize = 10240;

/// frpc's login: who it is and `privilege_key = md5(token + timestamp)`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Login {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub privilege_key: String,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub pool_count: i64,
}

/// The answer to [`Login`]; a non-empty `error` refuses it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoginResp {
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub version: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub run_id: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub error: String,
}

/// A proxy frpc wants registered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewProxy {
    #[serde(default)]
    pub proxy_name: String,
    #[serde(default)]
    pub proxy_type: String,
    #[serde(default)]
    pub use_encryption: bool,
    #[serde(default)]
    pub use_compression: bool,
    #[serde(default)]
    pub remote_port: i64,
}

/// The answer to [`NewProxy`]; a non-empty `error` refuses it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewProxyResp {
    pub proxy_name: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub remote_addr: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub error: String,
}

/// frpc closes a proxy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CloseProxy {
    #[serde(default)]
    pub proxy_name: String,
}

/// The first message on a work connection frpc opened after a [`Message::ReqWorkConn`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewWorkConn {
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub privilege_key: String,
    #[serde(default)]
    pub timestamp: i64,
}

/// Sent on a work connection when a user connection is paired with it; raw bytes follow.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartWorkConn {
    pub proxy_name: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub src_addr: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub dst_addr: String,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub src_port: u16,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub dst_port: u16,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub error: String,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// An application-level heartbeat (frpc sends none while the multiplexer keeps alive).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ping {
    #[serde(default)]
    pub privilege_key: String,
    #[serde(default)]
    pub timestamp: i64,
}

/// The answer to [`Ping`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pong {
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub error: String,
}

/// One message of the kinds used here.
#[derive(Debug, Clone)]
pub enum Message {
    Login(Login),
    LoginResp(LoginResp),
    NewProxy(NewProxy),
    NewProxyResp(NewProxyResp),
    CloseProxy(CloseProxy),
    NewWorkConn(NewWorkConn),
    ReqWorkConn,
    StartWorkConn(StartWorkConn),
    Ping(Ping),
    Pong(Pong),
}

impl Message {
    fn type_byte(&self) -> u8 {
        match self {
            Self::Login(_) => b'o',
            Self::LoginResp(_) => b'1',
            Self::NewProxy(_) => b'p',
            Self::NewProxyResp(_) => b'2',
            Self::CloseProxy(_) => b'c',
            Self::NewWorkConn(_) => b'w',
            Self::ReqWorkConn => b'r',
            Self::StartWorkConn(_) => b's',
            Self::Ping(_) => b'h',
            Self::Pong(_) => b'4',
        }
    }

    /// The framed bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body = match self {
            Self::Login(m) => serde_json::to_vec(m),
            Self::LoginResp(m) => serde_json::to_vec(m),
            Self::NewProxy(m) => serde_json::to_vec(m),
            Self::NewProxyResp(m) => serde_json::to_vec(m),
            Self::CloseProxy(m) => serde_json::to_vec(m),
            Self::NewWorkConn(m) => serde_json::to_vec(m),
            Self::ReqWorkConn => Ok(b"{}".to_vec()),
            Self::StartWorkConn(m) => serde_json::to_vec(m),
            Self::Ping(m) => serde_json::to_vec(m),
            Self::Pong(m) => serde_json::to_vec(m),
        }
        // Plain structs of strings and numbers always serialize.
        .unwrap_or_else(|_| b"{}".to_vec());
        let mut out = Vec::with_capacity(9 + body.len());
        out.push(self.type_byte());
        out.extend_from_slice(&(body.len() as i64).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses one body of type `t`.
    pub fn decode(t: u8, body: &[u8]) -> Result<Self, TunnelError> {
        let bad = |e: serde_json::Error| TunnelError::Protocol(format!("bad message {:?}: {e}", t as char));
        Ok(match t {
            b'o' => Self::Login(serde_json::from_slice(body).map_err(bad)?),
            b'1' => Self::LoginResp(serde_json::from_slice(body).map_err(bad)?),
            b'p' => Self::NewProxy(serde_json::from_slice(body).map_err(bad)?),
            b'2' => Self::NewProxyResp(serde_json::from_slice(body).map_err(bad)?),
            b'c' => Self::CloseProxy(serde_json::from_slice(body).map_err(bad)?),
            b'w' => Self::NewWorkConn(serde_json::from_slice(body).map_err(bad)?),
            b'r' => Self::ReqWorkConn,
            b's' => Self::StartWorkConn(serde_json::from_slice(body).map_err(bad)?),
            b'h' => Self::Ping(serde_json::from_slice(body).map_err(bad)?),
            b'4' => Self::Pong(serde_json::from_slice(body).map_err(bad)?),
            other => {
                return Err(TunnelError::Protocol(format!(
                    "unexpected message type {:?}",
                    other as char
                )));
            }
        })
    }

    /// Takes one whole message off the front of `buf`, if it holds one.
    pub fn take(buf: &mut Vec<u8>) -> Result<Option<Self>, TunnelError> {
        if buf.len() < 9 {
            return Ok(None);
        }
        let len = body_len(&buf[1..9])?;
        if buf.len() < 9 + len {
            return Ok(None);
        }
        let m = Self::decode(buf[0], &buf[9..9 + len])?;
        buf.drain(..9 + len);
        Ok(Some(m))
    }
}

fn body_len(b: &[u8]) -> Result<usize, TunnelError> {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    let len = i64::from_be_bytes(a);
    if !(0..=MAX_LEN as i64).contains(&len) {
        return Err(TunnelError::Protocol(format!(
            "message length {len} out of range"
        )));
    }
    Ok(len as usize)
}

/// Reads one unencrypted message.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Message, TunnelError> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await?;
    let len = body_len(&head[1..9])?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Message::decode(head[0], &body)
}

/// Writes one unencrypted message.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, m: &Message) -> Result<(), TunnelError> {
    w.write_all(&m.encode()).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let m = Message::StartWorkConn(StartWorkConn {
            proxy_name: "p".into(),
            src_port: 5,
            ..Default::default()
        });
        let mut buf = m.encode();
        assert_eq!(buf[0], b's');
        assert_eq!(&buf[1..9], &((buf.len() - 9) as i64).to_be_bytes());
        buf.extend_from_slice(&[b'r', 0, 0]);
        match Message::take(&mut buf) {
            Ok(Some(Message::StartWorkConn(s))) => assert_eq!((s.proxy_name.as_str(), s.src_port), ("p", 5)),
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.len(), 3, "a partial frame stays");
        assert!(matches!(Message::take(&mut buf), Ok(None)));
    }

    #[test]
    fn oversize_is_refused() {
        let mut buf = vec![b'o'];
        buf.extend_from_slice(&(1_000_000i64).to_be_bytes());
        assert!(Message::take(&mut buf).is_err());
    }
}
