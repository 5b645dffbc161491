"""devtools: development services for cloudfs, never part of the filesystem itself.

Each launcher runs a real server on loopback, from directories it owns, for development,
tests and benchmarks: `swift` (a single-node OpenStack Swift with its memcached). They are
reached as `cloudfs dev-<service> {start,stop,status} DIR` (devtools/cli.py) and as Python
APIs (`devtools.swift.start()`, ...) used by the tests, `scripts/run` and `bench/`.

Shared pieces: `ports` (finding free loopback ports), `process` (spawning servers that die
with their parent, pid files, stopping only our own processes), `errors`. Nothing here
imports the product packages (cloudfs, ccd, sqlfsn, seqwrite, wiring).
"""
