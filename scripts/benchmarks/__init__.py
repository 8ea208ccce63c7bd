"""The benchmark harness that `scripts/bench` runs (`python -m benchmarks` in scripts/).

It measures the appliance on 127.0.0.1 with processes it starts and stops itself, in five
parts that `--only` and `--skip` pick (default: all), each documented in its module:

* `core` (benchmarks/core.py): health, login, /auth/me, GET project and GET instances
  requests/s with an API key in a database of 1,000 users and 10,000 keys, latency,
  start-up time and idle memory; and create-to-running on Incus and Docker
  (benchmarks/engines.py, with benchmarks/creates.py and the seed in benchmarks/seed.py).
* `metering` (benchmarks/billing.py): the metering tick for 10,000 instances.
* `chart` (benchmarks/billing_chart.py): GET /usage/chart?days=90 over 10 million usage
  records.
* `webhooks` (benchmarks/webhooks.py): deliveries per second with 1,000 queued events,
  and the delay a dead endpoint adds to a healthy one.
* `binary` (benchmarks/binary.py): start-up of the single binary (scripts/build-binary,
  built first when missing or stale) against `appliance serve` from the virtualenv.

How targets are set: a number measured on its own says more about the machine than about
the appliance, so each is read against a baseline measured in the same run, on the same
machine, alternately with it where the two are loaded. Throughput targets are ratios:
the appliance's GET /api/v1/health req/s over a bare Flask app with only that route on
waitress with the same settings (>= 0.8; GET project >= 0.7 and GET instances >= 0.5 of
that baseline's health req/s), and the API's create-to-running time over the engine's
own `incus launch` / `docker run -d` of the same image with the same limits (<= 1.3), and
the binary's start-up over the virtualenv's (<= 1.5).
The metering tick and the chart are printed beside this machine's SQLite batched-insert
rate. Start-up (< 1.5 s), idle RSS (< 80 MB), the tick (< 2 s), the chart's p99 (< 50 ms)
and webhook deliveries (>= 200/s, a dead endpoint adding < 1 s) have absolute targets.

The table has one row per metric with its target and whether it is met ("-" when the
row has no target); every number, each wrk run included, is also written as JSON to
`--output`. The exit status is 0 even when a target is missed, unless `--strict`.
Throughput on a small machine is only comparable between quiet runs: the harness notes
the load average before it starts (`loadavg_1min_before` in the JSON).
APPLIANCE_* variables are removed from the servers' environment, so the appliance runs
with its defaults, except that the loaded server's per-user and per-address request
limits are raised (LOADED_SETTINGS in benchmarks/common.py): at their defaults (1,200
and 60 per minute) most of the /auth/me and login load would be answered 429. The
limits are still counted on every request, so their cost stays in the numbers.
"""
