"""helioforge.inversion: SICON Stokes inversion (paper 003); not built yet."""
