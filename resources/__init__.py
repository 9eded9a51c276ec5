"""IO edges only: the MySQL source, the BigQuery destination, read-pressure probes."""
