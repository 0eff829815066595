"""The state store: erpsync's own database (bindings, journal, quarantine, audit, lease)."""
