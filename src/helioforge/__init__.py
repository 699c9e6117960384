"""helioforge: physics-aware generative AI for solar observations.

Subpackages
-----------
data         readers and preprocessing (SHARP, HMI full-disk, JSOC fetch)
physics      physical parameters of magnetograms (TUF, TPF, TNF, PSEP, R, tilt)
nn           network blocks, safetensors checkpoints
interrogate  the generative interrogator (GAN + SVM directions + SimSiam retrieval),
             Chatterjee, Muñoz-Jaramillo & Malanushenko (2025, arXiv:2502.05351)
"""

__version__ = "0.1.0"
