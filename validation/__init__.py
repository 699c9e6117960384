"""Validation harnesses of helioforge that are not part of the installed package.

``lightweaver_ref``: an independent LTE Stokes synthesis with Lightweaver (Osborne & Milić
2021), the reference of ``tests/core/test_lightweaver_validation.py`` and
``benchmarks/validate_lightweaver.py``. Those add the repository root to ``sys.path`` and import
``from validation import lightweaver_ref``.
"""
