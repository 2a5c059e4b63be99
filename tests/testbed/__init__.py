"""kbackup's real Kafka test bed; see testbed.kafka."""
