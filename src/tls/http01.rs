//! The http-01 responder: a small HTTP/1 listener that answers
//! `GET /.well-known/acme-challenge/TOKEN` with the token's key authorization, and 404 to
//! anything else, for as long as an order needs it.

use super::error::clean;
use super::TlsError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PREFIX: &str = "/.well-known/acme-challenge/";
/// The most of a request that is read: a request line and a few headers.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until dropped.
pub(crate) struct Http01Server {
    accept: JoinHandle<()>,
    addr: SocketAddr,
}

impl Http01Server {
    /// Binds `listen` and serves `answers` (token → key authorization).
    pub(crate) async fn start(
        listen: SocketAddr,
        answers: HashMap<String, String>,
    ) -> Result<Http01Server, TlsError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| TlsError::Listener {
                listen,
                detail: clean(&e.to_string()),
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        let answers = Arc::new(answers);
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let answers = Arc::clone(&answers);
                        tokio::spawn(async move {
                            let _ =
                                tokio::time::timeout(CONNECTION_TIMEOUT, serve(stream, &answers))
                                    .await;
                        });
                    }
                    // Out of file descriptors and the like: pause rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(Http01Server { accept, addr })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Http01Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut stream: TcpStream, answers: &HashMap<String, String>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or("").split_ascii_whitespace();
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("");
    // An absolute form (`http://host/path`) is answered like its path.
    let path = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map(|j| &target[i + 3 + j..])
            .unwrap_or("/"),
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let found = path
        .strip_prefix(PREFIX)
        .and_then(|token| answers.get(token))
        .filter(|_| method == "GET" || method == "HEAD");
    let (status, body) = match found {
        Some(key_authorization) => ("200 OK", key_authorization.as_str()),
        None => ("404 Not Found", "not found\n"),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn answers_known_tokens_only() {
        let answers = HashMap::from([("tok-1".to_string(), "tok-1.thumb".to_string())]);
        let server = Http01Server::start("127.0.0.1:0".parse().expect("addr"), answers)
            .await
            .expect("start");
        let addr = server.addr();
        let ok = get(
            addr,
            "GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: a.example\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ntok-1.thumb"), "{ok}");
        let absolute = get(
            addr,
            "GET http://a.example/.well-known/acme-challenge/tok-1 HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(absolute.ends_with("tok-1.thumb"), "{absolute}");
        for other in [
            "GET /.well-known/acme-challenge/tok-2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "POST /.well-known/acme-challenge/tok-1 HTTP/1.1\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            let r = get(addr, other).await;
            assert!(r.starts_with("HTTP/1.1 404"), "{other:?}: {r}");
        }
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "closed when dropped"
        );
    }

    #[tokio::test]
    async fn a_busy_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = Http01Server::start(addr, HashMap::new())
            .await
            .err()
            .expect("port in use");
        assert!(
            err.to_string()
                .starts_with(&format!("acme: http-01 listener on {addr}:")),
            "{err}"
        );
        assert!(err.retryable());
    }
}
