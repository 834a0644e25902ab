//! Key Vault references reach only Key Vault: look-alike URLs in a request are refused with a 400
//! naming the field and never connected to, and a vault's redirect is never followed.
//! (Look-alikes that point off this machine — the instance metadata service, private ranges — are
//! covered by the parser's unit tests; a test never sends traffic there.)

mod support;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A listener that counts the connections it accepts and answers each request with `answer`,
/// remembering whether a bearer token arrived.
struct Trap {
    port: u16,
    connections: Arc<AtomicUsize>,
    tokens: Arc<AtomicUsize>,
}

async fn trap(addr: &str, answer: &'static str) -> Option<Trap> {
    let listener = TcpListener::bind(addr).await.ok()?;
    let port = listener.local_addr().ok()?.port();
    let connections = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(AtomicUsize::new(0));
    let (c, t) = (connections.clone(), tokens.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let t = t.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                if head.contains("authorization: bearer") {
                    t.fetch_add(1, Ordering::SeqCst);
                }
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    Some(Trap {
        port,
        connections,
        tokens,
    })
}

const OK_SECRET: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"value\":\"x\"}\r\n";

#[tokio::test]
async fn look_alike_vault_urls_are_refused_and_never_connected_to() {
    let v4 = trap("127.0.0.2:0", OK_SECRET)
        .await
        .expect("bind 127.0.0.2");
    let v6 = trap("[::1]:0", OK_SECRET).await;
    let s = spawn_app();
    let p = v4.port;
    let mut urls = vec![
        format!("http://127.0.0.2:{p}/secrets/procfwk-app-secret"),
        format!("https://127.0.0.2:{p}/secrets/procfwk-app-secret"),
        format!("http://localhost:{p}/secrets/procfwk-app-secret"),
        format!("https://procfwk-kv.vault.azure.net@127.0.0.2:{p}/secrets/procfwk-app-secret"),
        format!("https://127.0.0.2:{p}/secrets/procfwk-app-secret#.vault.azure.net"),
        format!("https://127.0.0.2:{p}/secrets/procfwk-app-secret?x=.vault.azure.net"),
        format!("https:\\\\127.0.0.2:{p}\\secrets\\procfwk-app-secret"),
        format!("http://procfwk-kv.vault.azure.net:{p}/secrets/procfwk-app-secret"),
        "https://kv.managedhsm.azure.net/secrets/procfwk-app-secret".to_string(),
    ];
    if let Some(v6) = &v6 {
        urls.push(format!(
            "http://[::1]:{}/secrets/procfwk-app-secret",
            v6.port
        ));
        urls.push(format!(
            "https://[::1]:{}/secrets/procfwk-app-secret",
            v6.port
        ));
    }
    for field in ["applicationId", "authenticationKey"] {
        for url in &urls {
            for function in ["ExecutePipelineV2", "ValidatePipeline"] {
                let body = with(v2_body("Wait 1", json!({})), field, json!(url));
                let (status, out) = s.call(function, &body).await;
                assert_eq!(status, 400, "{function} {field}={url}: {out}");
                assert_eq!(out["error"]["field"], field, "{url}: {out}");
            }
        }
    }
    assert_eq!(
        v4.connections.load(Ordering::SeqCst),
        0,
        "nothing reached 127.0.0.2"
    );
    if let Some(v6) = v6 {
        assert_eq!(
            v6.connections.load(Ordering::SeqCst),
            0,
            "nothing reached [::1]"
        );
    }
    let vault_reads = s.vault_reads().await;
    assert_eq!(vault_reads, 0, "no secret was read for a refused reference");
}

#[tokio::test]
async fn a_vault_redirect_is_not_followed() {
    let elsewhere = trap("127.0.0.2:0", OK_SECRET)
        .await
        .expect("bind 127.0.0.2");
    let redirect: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.2:{}/secrets/procfwk-app-secret\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n",
            elsewhere.port
        )
        .into_boxed_str(),
    );
    let vault = trap("127.0.0.1:0", redirect).await.expect("bind vault");
    // A real process: the managed identity reads IDENTITY_ENDPOINT from the process environment.
    let s = stack_with(
        sim_config(),
        &[(
            "PROCFWK_KEYVAULT_ENDPOINT",
            format!("http://127.0.0.1:{}", vault.port),
        )],
    );
    let body = with(
        v2_body("Wait 1", json!({})),
        "authenticationKey",
        json!("https://procfwk-kv.vault.azure.net/secrets/procfwk-app-secret"),
    );
    let (status, out) = s.call("ValidatePipeline", &body).await;
    assert!(
        status >= 500 || status == 404,
        "the 302 is an upstream answer: {status} {out}"
    );
    assert_eq!(
        vault.connections.load(Ordering::SeqCst),
        1,
        "the configured vault was asked"
    );
    assert_eq!(vault.tokens.load(Ordering::SeqCst), 1, "with its token");
    assert_eq!(
        elsewhere.connections.load(Ordering::SeqCst),
        0,
        "the redirect target was never contacted"
    );
}
