"""wiring: what both daemons (the mount and ccd) assemble the same way, in one place.

- `config`: the configuration file and its precedence (flags, environment, file, defaults);
- `filesystem`: opening a filesystem from a Config (namespace, Swift store, layout) with
  one-line errors, and the local directories (cache, spool, log) with private modes;
- `leases`: upload leases and their heartbeat;
- `sdnotify`: readiness and stopping notices for systemd.

Dependencies point down only: cloudfs and ccd import wiring; wiring imports sqlfsn and
seqwrite; nothing below imports wiring.
"""
