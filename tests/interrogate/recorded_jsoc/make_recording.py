"""Write the recorded JSOC answers and the file mirror replayed by ``test_sharp_ingest.py``.

Run from the repository root to regenerate (the files are committed; the tests never run this):
``python tests/interrogate/recorded_jsoc/make_recording.py``.

What is recorded (see README.md): the JSON answers of the JSOC CGIs that ``drms`` calls during a
SHARP archive ingest of 2012-03-06T00:00 to 2012-03-07T12:00 TAI at 12 h cadence in chunks of a
day (the second chunk is 12 h long), segments ``Br`` and ``bitmap``, and the 12 FITS files of
the two exports, in the layout of JSOC's download area (``/SUM…/D…/S00000``).
The JSON follows the answers of jsoc_info (op=series_struct, rs_list), jsoc_fetch
(op=exp_request, exp_status) and checkAddress.sh as drms parses them; the series structure is
trimmed to the prime keys, the keywords read here and the segments. The FITS files have the
layout of JSOC FITS exports (empty primary HDU, RICE-compressed image in HDU 1) and real SHARP
header keywords of HARPs 1445 and 1449 (AR 11429/11430) on 2012-03-06 (USFLUX etc. from the
14:24 TAI records, T_REC/T_OBS set to the records' times); the pixel data are small synthetic
bipoles (24×16 px), not copies of the real images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent
SERIES = "hmi.sharp_cea_720s"
SUMDIR = {"JSOC_20251106_000101": "/SUM86/D1798012345/S00000", "JSOC_20251106_000102": "/SUM72/D1798012377/S00000"}
#: chunk start day → (span, its times, export request id)
DAYS = {"2012.03.06": ("1d", ("00:00:00", "12:00:00"), "JSOC_20251106_000101"),
        "2012.03.07": ("12h", ("00:00:00",), "JSOC_20251106_000102")}
#: Header keywords of the real records (hmi.sharp_cea_720s[<HARP>][2012.03.06_14:24:00_TAI]).
HARPS = {
    1445: {"NOAA_AR": 0, "NOAA_ARS": "", "NOAA_NUM": 0, "CRVAL1": 356.290558, "CRVAL2": -10.3022, "USFLUX": 1.033958e20,
           "MEANGAM": 28.785, "TOTPOT": 3.189394e20, "R_VALUE": 0.0, "LAT_FWT": -10.129242, "LON_FWT": 22.083881},
    1449: {"NOAA_AR": 11429, "NOAA_ARS": "11429,11430", "NOAA_NUM": 2, "CRVAL1": 304.611481, "CRVAL2": 17.5305,
           "USFLUX": 5.219715e22, "MEANGAM": 52.739, "TOTPOT": 1.465284e24, "R_VALUE": 5.169, "LAT_FWT": 17.681293,
           "LON_FWT": -31.458414},
}
NX, NY = 24, 16


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def header(harp: int, t_rec: str, segment: str) -> fits.Header:
    k = HARPS[harp]
    h = fits.Header()
    cards = [
        ("T_REC", t_rec, "[2] time type; Slot time"), ("T_OBS", t_obs(t_rec), "[2] time type; Observation time"),
        ("HARPNUM", harp, "HARP ID"), ("NOAA_AR", k["NOAA_AR"], "NOAA AR number that best matches this HARP"),
        ("NOAA_ARS", k["NOAA_ARS"], "comma separated list of NOAA ARs in this HARP"), ("NOAA_NUM", k["NOAA_NUM"], ""),
        ("CTYPE1", "CRLN-CEA", ""), ("CTYPE2", "CRLT-CEA", ""), ("CRPIX1", (NX + 1) / 2, ""), ("CRPIX2", (NY + 1) / 2, ""),
        ("CRVAL1", k["CRVAL1"], ""), ("CRVAL2", k["CRVAL2"], ""), ("CDELT1", 0.03, ""), ("CDELT2", 0.03, ""),
        ("CUNIT1", "degree", ""), ("CUNIT2", "degree", ""), ("RSUN_REF", 696000000, "[m]"), ("CAR_ROT", 2121, ""),
        ("USFLUX", k["USFLUX"], "[Mx] Total unsigned flux"), ("MEANGAM", k["MEANGAM"], "[deg]"),
        ("TOTPOT", k["TOTPOT"], "[erg/cm^3]"), ("R_VALUE", k["R_VALUE"], "[Mx] log10 of Schrijver's R"),
        ("LAT_FWT", k["LAT_FWT"], ""), ("LON_FWT", k["LON_FWT"], ""), ("QUALITY", 0, ""), ("TELESCOP", "SDO/HMI", ""),
        ("INSTRUME", "HMI_SIDE1", ""), ("BUNIT", "Mx/cm^2" if segment == "Br" else " ", ""),
    ]
    for key, value, comment in cards:
        h[key] = (value, comment)
    return h


def t_obs(t_rec: str) -> str:
    """Observation time 4 s before the slot time, as in the real headers (``..._14:23:56_TAI``)."""
    hh, mm = int(t_rec[11:13]), int(t_rec[14:16])
    total = (hh * 60 + mm) * 60 - 4
    return f"{t_rec[:11]}{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}_TAI"


def data(harp: int, t_rec: str, segment: str) -> np.ndarray:
    """A synthetic bipole, G (``Br``), or its HARP mask (``bitmap``: 34 inside, 1 outside)."""
    y, x = np.mgrid[0:NY, 0:NX].astype(float)
    amp = 1800.0 if harp == 1449 else 300.0
    shift = 0.5 * int(t_rec[11:13]) / 12
    bz = amp * (np.exp(-((x - 8 - shift) ** 2 + (y - 8) ** 2) / 12.0) - np.exp(-((x - 16 - shift) ** 2 + (y - 8) ** 2) / 12.0))
    if segment == "Br":
        return bz
    return np.where(np.abs(bz) > 150, 34, 1).astype(np.uint8)


def fits_file(path: Path, harp: int, t_rec: str, segment: str) -> None:
    hdu = fits.CompImageHDU(data(harp, t_rec, segment), header(harp, t_rec, segment), compression_type="RICE_1")
    if segment == "Br":
        hdu.scale("int32", bscale=0.01, bzero=0.0)  # JSOC stores Br as RICE-compressed int32, BSCALE 0.01
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def main() -> None:
    routes: dict[str, list[str]] = {}
    write_json(HERE / "checkAddress" / "registered.json", {"status": 2, "msg": "Address is valid and registered"})
    routes["checkAddress.sh"] = ["checkAddress/registered.json"]
    keywords = [
        {"name": "cparms_sg000", "type": "string", "recscope": "constant", "defval": "compress Rice", "units": "none", "note": ""},
        {"name": "HARPNUM", "type": "int", "recscope": "variable", "defval": "-2147483648", "units": "none", "note": "HARP ID"},
        {"name": "T_REC", "type": "time", "recscope": "ts_eq", "defval": "-4712.01.01_11:59:28_TAI", "units": "TAI",
         "note": "[T_REC] Slot time"},
        {"name": "NOAA_AR", "type": "int", "recscope": "variable", "defval": "0", "units": "none",
         "note": "NOAA AR number that best matches this HARP"},
        {"name": "NOAA_ARS", "type": "string", "recscope": "variable", "defval": "", "units": "none",
         "note": "comma separated list of NOAA ARs in this HARP"},
        {"name": "QUALITY", "type": "int", "recscope": "variable", "defval": "-2147483648", "units": "none", "note": ""},
        {"name": "USFLUX", "type": "float", "recscope": "variable", "defval": "nan", "units": "Mx", "note": "Total unsigned flux"},
    ]
    segments = [{"name": s, "type": t, "units": u, "protocol": "fits", "dims": "VARxVAR", "note": n} for s, t, u, n in (
        ("magnetogram", "int", "Gauss", "Line-of-sight magnetogram in CEA projection"),
        ("bitmap", "char", " ", "Mask for the patch"),
        ("Br", "int", "Mx/cm^2", "Br from remapped vector field"),
        ("Bp", "int", "Mx/cm^2", "Bp from remapped vector field"),
        ("Bt", "int", "Mx/cm^2", "Bt from remapped vector field"))]
    write_json(HERE / "jsoc_info" / "series_struct.json", {
        "note": "Space-weather HMI Active Region Patches in CEA coordinates", "retention": 10000, "unitsize": 1,
        "archive": 1, "tapegroup": 1, "primekeys": ["HARPNUM", "T_REC"], "dbindex": ["HARPNUM", "T_REC"],
        "keywords": keywords, "links": [{"name": "MHARP", "target": "hmi.Mharp_720s", "kind": "DYNAMIC", "note": ""}],
        "segments": segments, "status": 0, "runtime": 0.07})
    routes[f"jsoc_info series_struct {SERIES}"] = ["jsoc_info/series_struct.json"]
    for day, (span, times, rid) in DAYS.items():
        chunk = f"{day}_00:00:00_TAI/{span}@12h"
        recs = [(h, f"{day}_{t}_TAI") for t in times for h in sorted(HARPS)]
        write_json(HERE / "jsoc_info" / f"rs_list.{day}.json", {
            "keywords": [{"name": "HARPNUM", "values": [str(h) for h, _ in recs]},
                         {"name": "T_REC", "values": [t for _, t in recs]}],
            "count": len(recs), "runtime": 0.21, "status": 0})
        routes[f"jsoc_info rs_list {SERIES}[][{chunk}]"] = [f"jsoc_info/rs_list.{day}.json"]
        ds = f"{SERIES}[][{chunk}]{{Br,bitmap}}"
        write_json(HERE / "jsoc_fetch" / f"exp_request.{rid}.json", {
            "status": 2, "requestid": rid, "method": "url", "protocol": "FITS", "wait": 5, "rcount": len(recs),
            "size": 0})
        routes[f"jsoc_fetch exp_request {ds}"] = [f"jsoc_fetch/exp_request.{rid}.json"]
        write_json(HERE / "jsoc_fetch" / f"exp_status.{rid}.pending.json", {
            "status": 1, "requestid": rid, "method": "url", "protocol": "FITS", "wait": 5,
            "error": "", "rcount": len(recs)})
        files = [{"record": f"{SERIES}[{h}][{t}]", "filename": f"{SERIES}.{h}.{t[:10].replace('.', '')}_{t[11:19].replace(':', '')}_TAI.{s}.fits"}
                 for h, t in recs for s in ("Br", "bitmap")]
        write_json(HERE / "jsoc_fetch" / f"exp_status.{rid}.json", {
            "status": 0, "requestid": rid, "method": "url", "protocol": "FITS", "dir": SUMDIR[rid], "wait": 0,
            "size": "0.14", "exptime": "2025-11-06 04:31:07", "count": len(recs), "rcount": len(recs), "tarfile": "",
            "keywords": f"{SUMDIR[rid]}/{rid}.keywords.txt", "data": files})
        routes[f"jsoc_fetch exp_status {rid}"] = [f"jsoc_fetch/exp_status.{rid}.pending.json", f"jsoc_fetch/exp_status.{rid}.json"]
        for f in files:
            h, t = int(f["record"].split("[")[1][:-1]), f["record"].split("[")[2][:-1]
            fits_file(HERE / "mirror" / SUMDIR[rid].lstrip("/") / f["filename"], h, t, f["filename"].split(".")[-2])
    # odd answers, used by the fault tests
    write_json(HERE / "jsoc_info" / "rs_list.empty.json", {"keywords": [{"name": "HARPNUM", "values": []},
                                                                        {"name": "T_REC", "values": []}],
                                                           "count": 0, "runtime": 0.05, "status": 0})
    write_json(HERE / "jsoc_info" / "rs_list.bad_series.json", {
        "status": 1, "error": "Can not create query for hmi.sharp_cea_72s, series does not exist"})
    write_json(HERE / "jsoc_fetch" / "exp_status.failed.json", {
        "status": 4, "requestid": "JSOC_20251106_000101", "method": "url", "protocol": "FITS", "wait": 0,
        "error": "Export processing failed, check the record set"})
    (HERE / "errors").mkdir(exist_ok=True)
    (HERE / "errors" / "proxy_502.html").write_text(
        "<html><head><title>502 Proxy Error</title></head><body><h1>Proxy Error</h1>"
        "<p>The proxy server received an invalid response from an upstream server.</p></body></html>\n")
    write_json(HERE / "routes.json", routes)


if __name__ == "__main__":
    main()
