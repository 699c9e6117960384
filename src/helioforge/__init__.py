"""helioforge: physics-aware generative AI for solar observations.

Three systems share one core. Each system is a pipeline of stages with the same module names:
``config`` → ``data`` → ``train`` → ``infer`` → ``evaluate`` → ``report``, chained by ``pipeline``.

Subpackages
-----------
interrogate  the generative interrogator of SHARP magnetograms: GAN, SVM latent directions,
             SimSiam retrieval (Chatterjee, Muñoz-Jaramillo & Malanushenko 2025, arXiv:2502.05351)
diffusion    class-conditional diffusion of SDO/AIA images on flare class
inversion    SICON CNN inversion of Hinode SP Stokes profiles (Asensio Ramos & Díaz Baso 2019),
             with the Milne-Eddington least-squares baseline (``inversion.me``)
data         readers and preprocessing: the FITS base, SHARP, HMI full-disk, AIA, GOES, Hinode SP,
             SIR models, JSOC and sample fetching
physics      magnetogram parameters (TUF, TPF, TNF, PSEP, R, tilt), atomic data, Milne-Eddington
             and LTE Stokes synthesis, the Faddeeva function
nn           network blocks, safetensors checkpoints, the shared training loop
cli          the ``helioforge`` command: one module per system plus the shared options

Core modules
------------
config       the data-folder rule and the one profile pattern (``Settings``, ``ProfileBase``)
workspace    the work-folder step protocol (what is current, reuse / resume / rebuild)
reporting    the report toolkit: ``save_figure``, HTML templates
io           atomic writes and FITS provenance
errors       errors a user can act on, raised at the API and CLI edges
"""

from helioforge._cpu import set_openmp_wait_policy as _set_openmp_wait_policy

_set_openmp_wait_policy()  # before anything imports torch (see helioforge._cpu)

__version__ = "0.1.0"
