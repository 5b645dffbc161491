"""cloudfs: the FUSE daemon and command line.

A FUSE filesystem whose file content lives in OpenStack Swift as a content-addressed store
(see seqwrite/) and whose namespace lives in SQL (see sqlfsn/). This package owns everything
user-facing: the mount (pyfuse3 + trio), the read and write paths, configuration, and the
admin commands, including the embedded development Swift (`cloudfs dev-swift`).
"""
