//! A TCP proxy on loopback that can cut its connections: a network
//! partition of one process, without stopping the server behind it.
#![allow(dead_code)]

use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection to its port on to `upstream`, until dropped.
pub struct Proxy {
    pub port: u16,
    /// `true` while cut: open connections are closed, new ones at once.
    cut: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` (`HOST:PORT`) on a free loopback port.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(watch::Sender::new(false));
        let upstream = upstream.to_string();
        let state = cut.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut cut = state.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    // Accepted while cut: closed at once, as a dead link
                    // would, so the client's reconnects keep failing.
                    if *cut.borrow_and_update() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    forward(client, server, &mut cut).await;
                });
            }
        });
        Proxy { port, cut, accept }
    }

    /// Closes every open connection, and every new one until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// The URL a NATS client connects through.
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Ends the forwarding tasks too.
        self.cut.send_replace(true);
    }
}

/// Copies both ways until either side closes or the proxy is cut; both
/// sockets are dropped (closed) on return.
async fn forward(mut client: TcpStream, mut server: TcpStream, cut: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}
