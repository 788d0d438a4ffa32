"""The box's side of the system: logging, systemd's watchdog."""
