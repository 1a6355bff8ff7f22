//! An HTTP API that answers every request with an error whose body repeats the credentials
//! it was sent (the `X-API-Key` header, and the `Authorization` header), wrapped in a long
//! message with terminal escapes in it: what a badly written endpoint, or a proxy in front
//! of one, does. The first `transient` requests get 503 (worth retrying), the rest 422.
//!
//! It runs on its own thread with its own runtime, so tests that drive the binary with
//! blocking calls can use it.
//!
//! Included as `#[path = "support/echo_fake.rs"] mod echo_fake;`.
#![allow(dead_code)]

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct EchoFake {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EchoFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl EchoFake {
    /// Listens on a free loopback port.
    pub fn start(transient: usize) -> EchoFake {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    while let Ok((stream, _)) = listener.accept().await {
                        let count = count.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let n = count.fetch_add(1, Ordering::SeqCst);
                                answer(req, n < transient)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        EchoFake {
            addr,
            served,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests it has answered.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<Incoming>,
    transient: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let message = format!(
        "\u{1b}[2J\u{1b}]0;owned\u{7}Invalid credentials: X-API-Key={} Authorization={} for {} {}; {}",
        header("x-api-key"),
        header("authorization"),
        req.method(),
        req.uri(),
        "the request was refused and here is a very long explanation. ".repeat(40)
    );
    let body = serde_json::json!({ "error": message }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = if transient {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
