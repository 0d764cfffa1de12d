"""What tests (and the benchmarks) need around the code under test, written once.

- `ports`: loopback ports without the bind-then-release race;
- `processes`: a server child process that starts on a free port, and stops, pauses or dies on
  demand;
- `redis`: the shared test Redis (127.0.0.1:6379), private `redis-server` processes, and a
  private three-node Redis Cluster (the `redis_cluster` session fixture);
- `gateway`: `python -m gateway serve` as a child process;
- `waiting`: waiting for an event under a safety bound, and telling whether a block waited on
  any timer at all.

Servers that run inside the test process are in `tests.servers` (uvicorn in a thread, port 0).
"""
