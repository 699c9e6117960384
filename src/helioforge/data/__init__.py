"""helioforge.data."""
