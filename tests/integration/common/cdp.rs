//! A headless chromium driven over the DevTools protocol, enough to load a page and read or
//! act on its live DOM (`Runtime.evaluate`) while the test changes the server underneath.
//! `--dump-dom` only shows the DOM at one moment; a test that asks "does the page show a
//! change within one refresh" needs to look again after the change.
//!
//! The WebSocket client is the minimum RFC 6455 asks of a client (masked text frames out,
//! unmasked frames in, fragmented messages joined): one connection to one page target.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: TcpStream,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts `program` headless with a fresh profile and connects to its first page.
    pub async fn start(program: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let port = devtools_port(profile.path()).await;
        let page = page_socket_path(port).await;
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let handshake = format!(
            "GET {page} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        socket.write_all(handshake.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(socket.read_u8().await.unwrap());
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "DevTools handshake: {head}"
        );
        Browser {
            child,
            _profile: profile,
            socket,
            next_id: 0,
        }
    }

    /// Sends one command and returns its `result`, skipping the events in between.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let answer =
            tokio::time::timeout(Duration::from_secs(30), self.call_unbounded(method, params));
        answer
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer from the browser"))
    }

    async fn call_unbounded(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.send(message.as_bytes()).await;
        loop {
            let answer: Value = serde_json::from_slice(&self.receive().await).unwrap();
            if answer["id"] == id {
                if let Some(error) = answer.get("error") {
                    panic!("{method}: {error}");
                }
                return answer["result"].clone();
            }
        }
    }

    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates a JavaScript expression in the page and returns its value (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true`, or panics after `deadline` with `what`.
    /// An exception (the page not loaded yet) counts as not yet.
    pub async fn until(&mut self, deadline: Duration, expression: &str, what: &str) {
        let end = tokio::time::Instant::now() + deadline;
        let guarded = format!(
            "(() => {{ try {{ return ({expression}) === true; }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if self.eval(&guarded).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > end {
                let body = self.eval("document.body?.innerText").await;
                panic!("{what}: not within {deadline:?}; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(&mut self, payload: &[u8]) {
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.socket.write_all(&frame).await.unwrap();
    }

    /// One whole message (fragments joined; control frames skipped).
    async fn receive(&mut self) -> Vec<u8> {
        let mut message = Vec::new();
        loop {
            let first = self.socket.read_u8().await.unwrap();
            let second = self.socket.read_u8().await.unwrap();
            let len = match second & 0x7f {
                126 => u64::from(self.socket.read_u16().await.unwrap()),
                127 => self.socket.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            self.socket.read_exact(&mut payload).await.unwrap();
            let opcode = first & 0x0f;
            if opcode >= 0x8 {
                assert_ne!(opcode, 0x8, "DevTools closed the connection");
                continue;
            }
            message.extend_from_slice(&payload);
            if first & 0x80 != 0 {
                return message;
            }
        }
    }
}

/// Chromium writes the port it bound to `DevToolsActivePort` in its profile.
async fn devtools_port(profile: &Path) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(port) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
        {
            return port;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "chromium wrote no DevToolsActivePort"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The WebSocket path of the first page target (`/json/list`).
async fn page_socket_path(port: u16) -> String {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = json_list(port).await;
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("[]");
        let targets: Value = serde_json::from_str(body).unwrap_or(json!([]));
        let page = (targets.as_array().into_iter().flatten())
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .and_then(|url| url.find("/devtools/").map(|i| url[i..].to_owned()));
        if let Some(page) = page {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no page target: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /json/list`, read up to its Content-Length (the DevTools server keeps the connection
/// open whatever the request asks).
async fn json_list(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = (head.lines()).find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")?
                        .trim()
                        .parse::<usize>()
                        .ok()
                });
                if n == 0 || length.is_some_and(|len| body.len() >= len) {
                    return text.into_owned();
                }
            } else if n == 0 {
                return text.into_owned();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("DevTools answered /json/list")
}
