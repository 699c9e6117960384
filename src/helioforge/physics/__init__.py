"""Physics shared by the three systems (no system is imported from here).

``params``: magnetogram parameters (TUF, TPF, TNF, PSEP, R, tilt); ``atomic``: line data and
Zeeman patterns (Fe I 6301.5/6302.5 Å); ``faddeeva``: the Faddeeva/Voigt functions; ``me``:
Milne-Eddington Stokes synthesis in torch with closed-form derivatives; ``lte``: LTE Stokes
synthesis of stratified atmospheres (equation of state, opacities, hydrostatic equilibrium,
DELO); ``sicon_targets``: the SICON target quantities and the ambiguity-free B_Q, B_U, B_V.
"""
