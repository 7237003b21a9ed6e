"""Storage consumer: events to InfluxDB (v2 write API, or 1.x ``/write``)."""
