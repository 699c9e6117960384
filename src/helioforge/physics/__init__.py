"""helioforge.physics."""
