//! Echo server on compio's runtime (one thread, io_uring driver): one task per connection.

use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use compio::BufResult;
use overlapped_bench::{announce, fatal, listen_addr, BUF_SIZE};

fn main() {
    let rt = compio::runtime::Runtime::new().unwrap_or_else(|e| fatal("building the runtime", e));
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
                Ok((stream, _)) => compio::runtime::spawn(serve(stream)).detach(),
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
        let BufResult(res, read) = stream.read(buf).await;
        buf = read;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let BufResult(res, written) = stream.write_all(buf).await;
                buf = written;
                if res.is_err() {
                    return;
                }
            }
        }
    }
}
