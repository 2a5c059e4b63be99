"""kbackup's real Kafka test bed: testbed.cluster is the facade, testbed.procs starts and
stops every child process (also for tests/bench)."""
