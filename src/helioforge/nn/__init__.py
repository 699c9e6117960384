"""Network blocks and weight I/O shared by the helioforge models."""
