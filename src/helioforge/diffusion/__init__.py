"""Flare-class-conditioned diffusion on SDO/AIA images (Ramunno et al. 2024, paper 002).

One pipeline of named stages, one module each:

``config``    the profile (:class:`~helioforge.diffusion.config.DiffusionProfile`) and its sections
``data``      AIA images → GOES-labelled, preprocessed, day-split dataset (``dataset.fits``)
``train``     the conditional DDPM (diffusers U-Net, EMA, Lightning)
``infer``     sampling with classifier-free guidance: :func:`~helioforge.diffusion.infer.sample`,
              :func:`~helioforge.diffusion.infer.sample_to_files`
``evaluate``  Fréchet distance, cluster metrics, classifier scores; the augmentation experiment
``report``    figures and HTML pages (through :mod:`helioforge.reporting`)
``pipeline``  the work folder and the chaining of the stages (one step protocol)

beside the model-specific modules ``features`` (ceVAE feature space), ``metrics``,
``classifier`` (flare-class CNN) and ``augment`` (§8.1 experiment).
"""
