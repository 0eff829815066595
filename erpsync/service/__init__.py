"""The service layer: each module runs one flow end to end (sync, write-back, resync, status)."""
