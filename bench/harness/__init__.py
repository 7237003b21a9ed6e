"""What the benchmarks start and drive beside the product: private servers on free loopback
ports (Mosquitto, InfluxDB 1.x, VictoriaMetrics, a TLS broker with accounts), the product's
programs as processes with their config files, a webhook receiver, and the roles installed from
the built wheel.

bench/ imports only the installed ``thermopipe`` packages and these modules, never ``tests``
(tests/contract/test_bench_imports.py holds it). A script run as ``python bench/x.py`` has
bench/ on its path and imports ``harness``; the tests import the same files as ``bench.harness``
(tests/servers.py and the end-to-end helpers build on them), so there is one copy of each.
The modules import one another relatively, which works under both names.
"""
