"""ERP adapters: sources that read job operations (SQL or CSV) and sinks that write counts back."""
