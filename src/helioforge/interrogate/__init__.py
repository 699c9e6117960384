"""helioforge.interrogate."""
