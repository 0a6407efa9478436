"""Step runners: kafka-python consumer groups per pool that execute workflow steps. They need
only Kafka and the artifact store, never the database (arrives with the execution engine)."""
