//! A distributed query worker: serves the stages coordinators send, over gRPC.
//!
//! ```text
//! cargo run --release -p lakehouse-examples --features distributed --bin lakehouse_worker -- \
//!     --listen 127.0.0.1:50051
//! ```
//!
//! A coordinator names it in its cluster:
//! `QueryEngine::builder().distributed(Cluster::new(["127.0.0.1:50051"])?)`.

use lakehouse_examples::worker::WorkerArgs;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match WorkerArgs::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let server = lakehouse_query::distributed::serve(args.listen, args.options()).await?;
    // The line a test or a script waits for before sending work.
    println!("listening on {}", server.local_addr());
    server.wait().await?;
    Ok(())
}
