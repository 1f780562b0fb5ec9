//! The baseline of the Kafka benchmark: a bare rdkafka consumer that reads
//! every record of the given topics (touching each payload) and does nothing
//! else. `scripts/bench-kafka.sh` runs it side by side with `driftwatch run`.
//!
//!     cargo run --release --example bare_consumer -- BROKERS GROUP TOPIC...

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // timed like a whole `driftwatch run`: from process start, group join included
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, group, topics @ ..] = args.as_slice() else {
        return Err("usage: bare_consumer BROKERS GROUP TOPIC...".into());
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    // the end: the sum of high watermarks now
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut total = 0i64;
    for t in metadata
        .topics()
        .iter()
        .filter(|t| topics.contains(&t.name()))
    {
        for p in t.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(t.name(), p.id(), Duration::from_secs(10))?;
            total += high - low;
        }
    }
    let (mut n, mut bytes) = (0i64, 0usize);
    let deadline = started + Duration::from_secs(600);
    while n < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(250)) {
            bytes += m.payload().map_or(0, <[u8]>::len);
            n += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bare consumer: {n} records ({:.0} MB) in {secs:.2}s: {:.0} records/s",
        bytes as f64 / 1e6,
        n as f64 / secs
    );
    Ok(())
}
