"""SICON inversion of Hinode SP Stokes maps with convolutional networks (Asensio Ramos &
Díaz Baso 2019, A&A 626, A102), with a Milne-Eddington baseline.

One pipeline of named stages: :mod:`~helioforge.inversion.config` (profiles) →
:mod:`~helioforge.inversion.dataset` (synthetic training sets, from the forward model
:mod:`~helioforge.inversion.forward` and the targets :mod:`~helioforge.inversion.targets`) →
:mod:`~helioforge.inversion.train` (the networks of :mod:`~helioforge.inversion.model`) →
:mod:`~helioforge.inversion.infer` (:class:`~helioforge.inversion.infer.SiconInverter`,
:func:`~helioforge.inversion.infer.invert_map`; maps prepared by
:mod:`~helioforge.inversion.preprocess`) → :mod:`~helioforge.inversion.evaluate` →
:mod:`~helioforge.inversion.report`, chained over a work folder by
:mod:`~helioforge.inversion.pipeline`. Beside them: the model atmospheres
(:mod:`~helioforge.inversion.atmospheres`), the Hinode SP instrument
(:mod:`~helioforge.inversion.instrument`), the output cube (:mod:`~helioforge.inversion.atmos_cube`),
single-model synthesis (:mod:`~helioforge.inversion.synthesis`) and the ME baseline
(:mod:`helioforge.inversion.me`).
"""
