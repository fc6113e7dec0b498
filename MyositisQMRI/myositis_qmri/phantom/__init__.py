"""A synthetic bilateral thigh exam with ground truth, for the demo, tests and benchmarks.

`make_exam(seed, size)` builds the anatomy (anatomy.py), the truth per muscle, smooth B1/B0
fields and every image (signals.py): MESE (EPG), complex multi-echo GRE (6-peak fat, R2*,
B0), vendor water/fat/FF and a T1-weighted structural image, all on one LPS grid with
identity direction (patient left is +x, so the right leg sits at low x index; the most distal
slice is z index 0). `write_exam` (writer.py) stores it as a DICOM study plus NIfTI truth.
Deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..segmentation.labels import LABEL_BY_VALUE, MUSCLES, label_value
from ..volume import EchoSeries, Geometry, Volume
from . import signals as S
from .anatomy import TISSUE_NAMES, build_anatomy

FIELD_STRENGTH_T = 3.0
# Grids: (nz, ny, nx), pixel spacing (mm), slice spacing (mm), slice thickness (mm).
SIZES = {
    "demo": ((16, 128, 224), 1.5, 7.0, 6.0),
    "small": ((6, 64, 112), 3.0, 14.0, 10.0),
}

# Water T2 (ms) and FF (%) per muscle index 1..11, right then left: values keep >= 2.5 ms
# from the edema grade edges (36.4, 42, 48 ms) and >= 4 points from the FF edges (10/30/60/90).
TRUTH_TABLE = {
    "right": [(31, 4), (45, 5), (39, 6), (32, 5), (33, 4), (32, 45), (31, 3), (52, 20), (32, 4), (33, 75), (31, 5)],
    "left": [(32, 5), (39, 4), (52, 5), (31, 20), (45, 6), (33, 75), (32, 4), (31, 45), (39, 5), (32, 20), (33, 3)],
}


@dataclass
class PhantomExam:
    """Everything a synthetic exam holds; all Volumes/EchoSeries share `geometry`."""

    seed: int
    size: str
    geometry: Geometry
    slice_thickness_mm: float
    muscle_labels: Volume
    tissue_labels: Volume
    water_t2_ms: Volume
    ff_percent: Volume
    b1: Volume
    b0_hz: Volume
    r2star_per_s: Volume
    proton_density: Volume
    mese: EchoSeries
    gre: EchoSeries
    vendor_water: Volume
    vendor_fat: Volume
    vendor_ff: Volume
    t1w: Volume
    truth: dict
    field_strength_t: float = FIELD_STRENGTH_T
    noise_sigma: dict = field(default_factory=dict)
    tissue_names: dict = field(default_factory=lambda: dict(TISSUE_NAMES))

    @property
    def mese_echo_spacing_ms(self) -> float:
        return self.mese.echo_times_ms[1] - self.mese.echo_times_ms[0]


def truth_table(seed: int) -> dict:
    """Per label value: water T2 (ms), FF (%), name. Seed 0 uses the table as designed; other
    seeds shuffle which muscle of a side gets which pair (same safe values)."""
    rng = np.random.default_rng([seed, 7])
    truth = {}
    for side in ("right", "left"):
        pairs = list(TRUTH_TABLE[side])
        if seed != 0:
            pairs = [pairs[i] for i in rng.permutation(len(pairs))]
        for muscle, (t2, ff) in zip(MUSCLES, pairs):
            value = label_value(muscle.index, side)
            truth[value] = {"water_t2_ms": float(t2), "ff_percent": float(ff),
                            "name": LABEL_BY_VALUE[value].name, "key": LABEL_BY_VALUE[value].key,
                            "side": side}
    return truth


def make_geometry(size: str) -> tuple[Geometry, float]:
    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; choose from {sorted(SIZES)}")
    (nz, ny, nx), pixel_mm, slice_mm, thickness_mm = SIZES[size]
    origin = (-(nx - 1) / 2 * pixel_mm, -(ny - 1) / 2 * pixel_mm, -(nz - 1) / 2 * slice_mm)
    return Geometry((nz, ny, nx), (pixel_mm, pixel_mm, slice_mm), origin), thickness_mm


def make_exam(seed: int = 0, size: str = "demo", *, mese_echoes: int = 17, echo_spacing_ms: float = 10.0,
              gre_echo_times_ms=(1.2, 2.3, 3.4, 4.5, 5.6, 6.7), b1_range=(0.7, 1.15),
              noise: bool = True) -> PhantomExam:
    """Synthesise the exam. `noise=False` gives the noise-free (but still quantised) images."""
    geometry, thickness_mm = make_geometry(size)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
    anatomy_rng, field_rng, noise_rng, _ = streams
    tissue, labels, _shapes = build_anatomy(geometry, anatomy_rng)
    truth = truth_table(seed)
    pd, water_t2, ff, r2s = S.tissue_maps(tissue, labels, truth)
    shape = geometry.shape_zyx
    b1 = S.smooth_field(shape, field_rng, *b1_range)
    b0 = S.smooth_field(shape, field_rng, -1.0, 1.0)
    b0 = b0 - b0.mean()
    b0 *= field_rng.uniform(110.0, 150.0) / np.abs(b0).max()
    phase0 = S.smooth_field(shape, field_rng, -1.0, 1.0)
    shading = S.smooth_field(shape, field_rng, 0.85, 1.1)

    sigma = {"mese": 11.0, "gre": 12.0, "vendor": 8.0, "t1w": 6.0} if noise else {k: 0.0 for k in
                                                                             ("mese", "gre", "vendor", "t1w")}
    echo_times = tuple(echo_spacing_ms * (k + 1) for k in range(mese_echoes))
    mese = S.mese_noise_free(pd, water_t2, ff, b1, mese_echoes, echo_spacing_ms)
    mese = np.round(S.rician(mese, sigma["mese"], noise_rng)).astype(np.float32)

    gre = S.gre_noise_free(pd, ff, r2s, b0, phase0, gre_echo_times_ms, FIELD_STRENGTH_T)
    gre = gre + sigma["gre"] * (noise_rng.normal(size=gre.shape) + 1j * noise_rng.normal(size=gre.shape))
    gre = np.round(np.abs(gre)) * np.exp(1j * S.phase_from_stored(S.quantise_phase(np.angle(gre))))

    water = np.round(S.rician(S.SIGNAL_SCALE * pd * (1 - ff / 100), sigma["vendor"], noise_rng))
    fat = np.round(S.rician(S.SIGNAL_SCALE * pd * ff / 100, sigma["vendor"], noise_rng))
    body = pd > 0
    vendor_ff = np.zeros(shape)
    vendor_ff[body] = 100.0 * fat[body] / np.maximum(water[body] + fat[body], 1.0)
    vendor_ff = np.round(vendor_ff * 10) / 10        # stored in 0.1 % steps
    t1w = np.round(S.rician(S.t1w_noise_free(pd, ff, tissue, shading), sigma["t1w"], noise_rng))

    vol = lambda a, **m: Volume.on_geometry(np.asarray(a), geometry, m)
    series = dict(spacing_mm=geometry.spacing_mm, origin_mm=geometry.origin_mm, direction=geometry.direction,
                  field_strength_t=FIELD_STRENGTH_T, vendor="SIEMENS")
    return PhantomExam(
        seed=seed, size=size, geometry=geometry, slice_thickness_mm=thickness_mm,
        muscle_labels=vol(labels.astype(np.int16), image_kind="labels"),
        tissue_labels=vol(tissue.astype(np.int16), image_kind="labels"),
        water_t2_ms=vol(water_t2.astype(np.float32), units="ms"),
        ff_percent=vol(ff.astype(np.float32), units="%"),
        b1=vol(b1.astype(np.float32), units="relative"),
        b0_hz=vol(b0.astype(np.float32), units="Hz"),
        r2star_per_s=vol(r2s.astype(np.float32), units="1/s"),
        proton_density=vol(pd.astype(np.float32), units="relative"),
        mese=EchoSeries(mese, echo_times, image_kind="magnitude", refocusing_angle_deg=180.0,
                        fat_suppressed=False, metadata={"series_description": f"MESE {mese_echoes} echoes",
                                                      "MRAcquisitionType": "3D"}, **series),
        gre=EchoSeries(gre.astype(np.complex64), tuple(gre_echo_times_ms), image_kind="complex",
                       precession_clockwise=True, fat_suppressed=False,
                       metadata={"series_description": "Multi-echo GRE"}, **series),
        vendor_water=vol(water.astype(np.float32), image_kind="water"),
        vendor_fat=vol(fat.astype(np.float32), image_kind="fat"),
        vendor_ff=vol(vendor_ff.astype(np.float32), image_kind="ff", units="%"),
        t1w=vol(t1w.astype(np.float32), image_kind="magnitude", classification="t1w"),
        truth=truth, noise_sigma=sigma,
    )


from .writer import write_exam  # noqa: E402  (writer imports PhantomExam from here)

__all__ = ["PhantomExam", "make_exam", "write_exam", "truth_table", "TRUTH_TABLE", "SIZES", "TISSUE_NAMES"]
