//! Echo server on tokio-uring (one thread: tokio's current-thread runtime driving an io_uring
//! ring): one task per connection, owned buffers.

use tokio_uring::net::{TcpListener, TcpStream};

use overlapped_bench::{announce, fatal, listen_addr, BUF_SIZE};

fn main() {
    tokio_uring::builder().entries(1024).start(async {
        let listener = TcpListener::bind(listen_addr()).unwrap_or_else(|e| fatal("binding", e));
        announce(
            listener
                .local_addr()
                .unwrap_or_else(|e| fatal("local_addr", e)),
        );
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio_uring::spawn(serve(stream));
                }
                Err(e) => eprintln!("accept: {e}"),
            }
        }
    });
}

async fn serve(stream: TcpStream) {
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
