"""Step runners: kafka-python consumer groups per pool that execute workflow steps. They need
only Kafka and the artifact store, never the database.

Public surface: `runners.worker.Runner` (the `autoops runner` process) and `runners.nodes`
(the step executors, `run_step`).
"""
