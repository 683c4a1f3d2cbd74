"""What scripts/chaos.py and scripts/nemesis.py share: their own servers and workers (`servers`),
faults on them (`nemesis_ops`), a seeded fault schedule (`schedule`), the history read back from
MariaDB and Redis (`history`, `reckon`) and the pure checker over it (`checker`).

scripts/ is not a package: the two scripts run with scripts/ first on the path and import
`faults.servers`; tests load `checker` and `schedule` by path (stdlib only, no servers).
"""
