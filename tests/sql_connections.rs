//! Connections that die without a word: a statement on a connection that stops answering (no FIN, no
//! RST — an Azure load balancer dropping an idle flow, a gateway failing over) is abandoned after the
//! statement timeout, the connection is not reused, and the transition runs again on a fresh one.
//! The server sits behind a loopback proxy that the test can freeze.

use procfwk::adapters::sqlserver::{SqlServerBackend, SqlServerOptions};
use procfwk::store::{statements, Store, StoreError, Transition, Tx};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tds_test_server::{ServerOptions, TdsTestServer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Forwards loopback connections to `target`; while `frozen`, connections open before stop passing
/// bytes (they hang, as a dead peer does), while new ones still work.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

async fn proxy(target: u16) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let frozen = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (f, a) = (frozen.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let f = f.clone();
            // Connections accepted while frozen are not frozen themselves.
            let born_frozen = f.load(Ordering::SeqCst);
            tokio::spawn(pump(client, server, f, born_frozen));
        }
    });
    Proxy {
        port,
        frozen,
        accepted,
    }
}

async fn pump(client: TcpStream, server: TcpStream, frozen: Arc<AtomicBool>, exempt: bool) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let f2 = frozen.clone();
    let up = async move {
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match tokio::io::AsyncReadExt::read(&mut cr, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while !exempt && f2.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match tokio::io::AsyncReadExt::read(&mut sr, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while !exempt && frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down);
}

struct CountProperties;

#[async_trait::async_trait]
impl Transition for CountProperties {
    type Output = usize;
    type Error = StoreError;
    async fn apply(&self, tx: &mut dyn Tx) -> Result<usize, StoreError> {
        Ok(tx.query(&statements::CURRENT_PROPERTIES, &[]).await?.len())
    }
}

#[tokio::test]
async fn a_silent_connection_is_abandoned_after_the_statement_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TdsTestServer::start(ServerOptions {
        backend: tds_test_server::Backend::postgres_for_tests().expect("PostgreSQL for the tests"),
        database_path: dir.path().join("procfwk.db"),
        users: vec![("procfwk".into(), "Pw-1".into())],
        ..Default::default()
    })
    .await
    .expect("server");
    let proxy = proxy(server.port()).await;
    let url = format!(
        "Server=tcp:127.0.0.1,{};Database=procfwk;User ID=procfwk;Password=Pw-1;Encrypt=DANGER_PLAINTEXT",
        proxy.port
    );
    let backend = SqlServerBackend::connect_with(
        &url,
        None,
        SqlServerOptions {
            pool_size: 2,
            checkout_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .expect("backend");
    let store = Store::new(Arc::new(backend));
    store.init_schema().await.expect("db init");
    assert!(store.run(&CountProperties).await.is_ok(), "warm connection");
    let before = proxy.accepted.load(Ordering::SeqCst);

    // The pooled connection goes silent; the next transition must not hang on it.
    proxy.frozen.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), store.run(&CountProperties))
        .await
        .expect("the transition hung on a silent connection");
    let took = t0.elapsed();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        took < Duration::from_secs(5),
        "abandoned after the statement timeout, not hung: {took:?}"
    );
    assert!(
        proxy.accepted.load(Ordering::SeqCst) > before,
        "a fresh connection was opened"
    );
    server.shutdown().await;
}
