"""Readers and preprocessing of the real data, shared by the three systems.

``fits``: the FITS base (``FitsReadError``, ``Skipped``, ``read_image_hdu``); readers ``sharp``
(SHARP CEA patches), ``fulldisk`` (tiles of HMI full-disk magnetograms), ``aia``, ``goes``,
``hinode`` (SP instrument files), ``hinode_sp`` (Hinode SP maps), ``sir`` (SIR model
atmospheres); ``preprocess``: magnetogram preprocessing for the networks; ``jsoc``: SHARP
downloads from JSOC; ``fetch``: the full sample from its public sources (``registry.csv``).
"""
