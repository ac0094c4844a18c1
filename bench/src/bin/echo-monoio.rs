//! Echo server on monoio's io_uring runtime (one thread): one task per connection, owned buffers.

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use overlapped_bench::{announce, fatal, listen_addr, BUF_SIZE};

fn main() {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .build()
        .unwrap_or_else(|e| fatal("building the io_uring runtime", e));
    rt.block_on(async {
        let listener = TcpListener::bind(listen_addr()).unwrap_or_else(|e| fatal("binding", e));
        announce(
            listener
                .local_addr()
                .unwrap_or_else(|e| fatal("local_addr", e)),
        );
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    monoio::spawn(serve(stream));
                }
                Err(e) => eprintln!("accept: {e}"),
            }
        }
    });
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(BUF_SIZE);
    loop {
        buf.clear();
        let (res, read) = stream.read(buf).await;
        buf = read;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let (res, written) = stream.write_all(buf).await;
                buf = written;
                if res.is_err() {
                    return;
                }
            }
        }
    }
}
