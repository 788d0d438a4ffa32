"""Hardware-in-the-loop rig and benchmarks (see hil/README.md)."""
