//! Echo server on tokio's current-thread runtime: one task per connection.

use overlapped_bench::{announce, fatal, listen_addr, BUF_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| fatal("building the runtime", e));
    rt.block_on(async {
        let listener = TcpListener::bind(listen_addr())
            .await
            .unwrap_or_else(|e| fatal("binding", e));
        announce(
            listener
                .local_addr()
                .unwrap_or_else(|e| fatal("local_addr", e)),
        );
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(e) => eprintln!("accept: {e}"),
            }
        }
    });
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
