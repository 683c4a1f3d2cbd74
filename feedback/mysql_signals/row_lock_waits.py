"""Row lock waits in progress (InnoDB's `Innodb_row_lock_current_waits`): lock contention, which
hurts the live site before CPU does — a backfill's chunk holding rows the site's writes queue on."""

from easeoff.feedback.mysql_signals import gauge

SIGNAL = gauge("row_lock_waits", "Innodb_row_lock_current_waits")
