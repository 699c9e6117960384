"""The generative interrogator (paper 000: Chatterjee, Muñoz-Jaramillo & Malanushenko 2025,
arXiv:2502.05351): a GAN of SHARP magnetograms, SVM latent directions for physical parameters,
and SimSiam retrieval of the nearest real patch.

Stages, one module each (the same names in every system of helioforge):

* :mod:`~helioforge.interrogate.config` — the typed :class:`~helioforge.interrogate.config.Profile`;
* :mod:`~helioforge.interrogate.data` — the real corpus (SHARP patches + full-disk tiles);
* :mod:`~helioforge.interrogate.train` — what each model trains on; the models in
  :mod:`~helioforge.interrogate.gan`, :mod:`~helioforge.interrogate.directions`,
  :mod:`~helioforge.interrogate.simsiam`, :mod:`~helioforge.interrogate.retrieval`;
* :mod:`~helioforge.interrogate.infer` — :class:`~helioforge.interrogate.infer.Interrogator`
  (generate, steer, search) and :func:`~helioforge.interrogate.infer.magnetogram_params`;
* :mod:`~helioforge.interrogate.evaluate` — parameters of images, retrieval against baselines,
  health of the models;
* :mod:`~helioforge.interrogate.report` — figures like the paper's and the HTML page;
* :mod:`~helioforge.interrogate.pipeline` — the work folder and the chain of stages
  (:func:`~helioforge.interrogate.pipeline.interrogate`).
"""
