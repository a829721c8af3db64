"""What every mailintake service shares at run time: settings loading, JSON logs,
the metrics/health endpoint and the Kafka processing loop."""
