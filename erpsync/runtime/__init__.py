"""Runtime wiring: logging, scheduler, leader lease, health and metrics."""
