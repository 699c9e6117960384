"""helioforge.nn."""
