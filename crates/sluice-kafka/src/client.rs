//! Client settings shared by the producer and consumer.

use rdkafka::config::ClientConfig;

/// A client configuration for `brokers` with Sluice's producer defaults: the idempotent
/// producer and `acks=all`, so a retried send is never written twice.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("enable.idempotence", "true").set("acks", "all");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_is_idempotent_with_acks_all() {
        let c = producer_config("127.0.0.1:9092");
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
    }
}
