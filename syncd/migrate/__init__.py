"""``syncd migrate``: moving schedules and escalation policies between vendors, verified by
rendering who each side would page (see docs/migration.md)."""
