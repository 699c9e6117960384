"""helioforge.diffusion: flare-class-conditioned diffusion (paper 002); not built yet."""
