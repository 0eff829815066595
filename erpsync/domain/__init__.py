"""The pure core: models, the reconcile diff, unit and time conversions. No I/O lives here."""
