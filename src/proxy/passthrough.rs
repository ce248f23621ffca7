//! Reading the ClientHello of a passthrough (`protocol: tcp` with `match.sni` routes)
//! connection: as many reads as the parser (`proxy::sni`) asks for, bounded in size
//! (`sni::MAX_HELLO`) and in time (the listener's `client_header` timeout). Every byte read
//! is kept, so the TCP path can write it to the backend before splicing: TLS is never
//! terminated here.

use crate::proxy::sni::{self, Hello, SniError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A variant with an inner error says what failed; the inner error is its `source`
/// (rendered by `crate::error::Chain`).
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("reading the ClientHello")]
    Io(#[from] std::io::Error),
    #[error("the client closed before a whole ClientHello")]
    Closed,
    #[error("no ClientHello within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Parse(#[from] SniError),
}

/// The bytes read so far (the whole ClientHello, maybe more) and the server name in it.
#[derive(Debug)]
pub struct ClientHello {
    pub bytes: Vec<u8>,
    pub sni: Option<String>,
}

pub async fn read_client_hello<R: AsyncRead + Unpin>(
    stream: &mut R,
    deadline: Duration,
) -> Result<ClientHello, HelloError> {
    tokio::time::timeout(deadline, read(stream))
        .await
        .map_err(|_| HelloError::Timeout(deadline))?
}

async fn read<R: AsyncRead + Unpin>(stream: &mut R) -> Result<ClientHello, HelloError> {
    let mut bytes = Vec::with_capacity(2048);
    loop {
        match sni::parse(&bytes)? {
            Hello::Complete { sni } => return Ok(ClientHello { bytes, sni }),
            Hello::Incomplete { needed } => {
                // Read whatever arrives, at least up to `needed`: extra bytes are forwarded.
                let have = bytes.len();
                bytes.resize(needed.max(have + 512), 0);
                let read = stream.read(&mut bytes[have..]).await?;
                bytes.truncate(have + read);
                if read == 0 {
                    return Err(HelloError::Closed);
                }
            }
        }
    }
}
