"""helioforge studio: steer the interrogator's generator in a browser (FastAPI + a static page).

:class:`~helioforge.studio.service.StudioService` is the Python API; :func:`~helioforge.studio.app.create_app`
wraps it in HTTP; ``helioforge studio -w WORKDIR`` serves it with uvicorn.
"""

from helioforge.studio.service import StudioService, View

__all__ = ["StudioService", "View", "create_app"]


def create_app(*args, **kwargs):
    """:func:`helioforge.studio.app.create_app` (imports FastAPI only when called)."""
    from helioforge.studio.app import create_app as _create

    return _create(*args, **kwargs)
