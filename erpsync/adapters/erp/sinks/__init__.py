"""Count sinks: where MM part counts are written into the ERP (one module per kind of target)."""
