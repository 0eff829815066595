"""MachineMetrics: the API client (`client`), its request/response models (`schemas`), its error
table (`errors`) and a strict local simulator of the API (`simulator`, a test and demo tool)."""
