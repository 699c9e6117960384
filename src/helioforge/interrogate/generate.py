"""Writing generated magnetograms: FITS with parameters and provenance in the header, plus PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from helioforge.io import atomic_path, write_fits

__all__ = ["write_generated"]


def write_generated(itg, z: np.ndarray, output: str | Path, settings: dict[str, Any]) -> tuple[Path, Path, list[dict]]:
    """Generate G(z) for z (n, latent_dim) and write ``output`` (FITS) and ``output.png``.

    The FITS primary HDU holds the images (n, N, N) (or (N, N) for n = 1) in units of
    ``clip_gauss`` (BUNIT ``kG`` for the default 1000 G) with one ``HIERARCH HF`` card per
    parameter of the first image; an extension ``LATENT`` holds z and a ``PARAMS`` table holds
    the parameters of every image. Returns ``(fits_path, png_path, rows)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helioforge.interrogate.gan import generate
    from helioforge.interrogate.pipeline import image_params

    z = np.atleast_2d(np.asarray(z, dtype=np.float32))
    images = generate(itg.generator, z)
    p = image_params(images, itg.profile)
    rows = [{"image": i, **{k: float(v[i]) for k, v in p.items()}} for i in range(len(z))]
    output = Path(output)
    hdr = fits.Header()
    hdr["BUNIT"] = ("kG" if itg.profile.data.clip_gauss == 1000 else f"{itg.profile.data.clip_gauss:g} G", "Br / clip field")
    params = {**settings, "image_size": itg.profile.data.image_size, "profile": itg.profile.name}
    params.update({k: float(v[0]) for k, v in p.items()})
    table = fits.BinTableHDU.from_columns([fits.Column(name=k, format="D", array=np.asarray(v, float)) for k, v in p.items()], name="PARAMS")
    data = images[:, 0] if len(z) > 1 else images[0, 0]
    write_fits(output, data, model="helioforge GAN generator", params=params, header=hdr,
               extra_hdus=[fits.ImageHDU(z, name="LATENT"), table])
    png = output.with_suffix(".png")
    ncol = min(len(z), 8)
    nrow = int(np.ceil(len(z) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ax in enumerate(axes.ravel()[: len(z)]):
        ax.imshow(images[i, 0], cmap="gray", vmin=-1, vmax=1, origin="lower")
        ax.set_title(f"TUF {p['TUF'][i]:.0f}  R {p['R'][i]:.0f}\nPSEP {p['PSEP'][i]:.1f}  lead {int(p['leading_sign'][i]):+d}", fontsize=7)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return output, png, rows
