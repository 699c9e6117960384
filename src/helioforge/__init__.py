"""helioforge: physics-aware generative AI for solar observations.

Subpackages
-----------
data         readers and preprocessing (SHARP, HMI full-disk, JSOC fetch)
physics      physical parameters of magnetograms (TUF, TPF, TNF, PSEP, R, tilt)
nn           network blocks, safetensors checkpoints
interrogate  the generative interrogator (GAN + SVM directions + SimSiam retrieval),
             Chatterjee, Muñoz-Jaramillo & Malanushenko (2025, arXiv:2502.05351)
"""

from helioforge._cpu import set_openmp_wait_policy as _set_openmp_wait_policy

_set_openmp_wait_policy()  # before anything imports torch (see helioforge._cpu)

__version__ = "0.1.0"
