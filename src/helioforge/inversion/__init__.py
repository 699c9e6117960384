"""SICON-style Stokes inversion of Hinode SP maps (Asensio Ramos & Díaz Baso 2019).

Holds the instrument model, the synthetic training-set generator and (later) the networks.
"""
