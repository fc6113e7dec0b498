"""Write a PhantomExam as a DICOM study (classic or enhanced MR) plus NIfTI ground truth.

Series (one patient, one study, one frame of reference):
  1 T1w TSE structural   ORIGINAL\\PRIMARY\\M\\ND
  2 MESE, all echoes     ORIGINAL\\PRIMARY\\M\\ND, MRAcquisitionType 3D (non-selective EPG)
  3 GRE magnitude        ORIGINAL\\PRIMARY\\M\\ND, 6 echoes
  4 GRE phase            ORIGINAL\\PRIMARY\\P\\ND, 0..4095, slope 2, intercept -4096
  5/6/7 vendor Dixon     DERIVED\\PRIMARY\\W|F|FF\\WATER|FAT|FAT_FRACTION (FF in 0.1 % steps)
Truth under folder/truth/: label and property maps (NIfTI) and truth.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io.atomic import write_text_atomic
from ..io.dicom_write import ImageStack, SeriesSpec, StudyInfo, uid_from, write_series
from ..io.nifti import write_volume
from ..progress import track
from . import signals as S


def _study(exam) -> StudyInfo:
    entropy = f"myositis-qmri-phantom-{exam.seed}-{exam.size}"
    return StudyInfo(study_uid=uid_from(entropy, "study"), frame_of_reference_uid=uid_from(entropy, "for"),
                     patient_id=f"MYOQMRI-PHANTOM-{exam.seed}", field_strength_t=exam.field_strength_t)


def _echo_stacks(array, echo_times_ms, image_type, **stack) -> list[ImageStack]:
    return [ImageStack(array[e], image_type, echo_time_ms=te, echo_number=e + 1, **stack)
            for e, te in enumerate(echo_times_ms)]


def exam_series(exam) -> list[tuple[str, SeriesSpec]]:
    """The series of the exam as (folder name, spec)."""
    g, thick = exam.geometry, exam.slice_thickness_mm
    mese_te = exam.mese.echo_times_ms
    gre_te = exam.gre.echo_times_ms
    magnitude = ("ORIGINAL", "PRIMARY", "M", "ND")
    spin_echo = dict(ScanningSequence="SE", SequenceVariant="SK", ScanOptions="", SequenceName="*se3d",
                     PixelBandwidth=250, NumberOfAverages=1)
    gradient_echo = dict(ScanningSequence="GR", SequenceVariant="SP", ScanOptions="", SequenceName="*fl3d6",
                         MRAcquisitionType="3D", RepetitionTime=12.0, FlipAngle=5, EchoTrainLength=len(gre_te),
                         PixelBandwidth=1000, NumberOfAverages=1)
    phase_stored = S.quantise_phase(np.angle(exam.gre.array))
    phase_values = 2.0 * phase_stored - S.PHASE_LEVELS
    vendor = dict(gradient_echo, SequenceName="*fl3d2", EchoTrainLength=2)
    return [
        ("01_T1w_TSE", SeriesSpec("t1_tse_tra_thighs", 1, [ImageStack(exam.t1w.array, magnitude, 12.0, 1,
                                                                      acquisition_contrast="T1")], g, thick,
                                  dict(spin_echo, SequenceName="*tse2d1_3", MRAcquisitionType="2D",
                                       RepetitionTime=650.0, FlipAngle=150, EchoTrainLength=3))),
        ("02_MESE", SeriesSpec(f"se_mc_{len(mese_te)}echoes", 2,
                               _echo_stacks(exam.mese.array, mese_te, magnitude, acquisition_contrast="T2"),
                               g, thick, dict(spin_echo, MRAcquisitionType="3D", RepetitionTime=4000.0,
                                              FlipAngle=180, EchoTrainLength=len(mese_te)))),
        ("03_GRE_M", SeriesSpec("gre_multiecho_6e", 3, _echo_stacks(np.abs(exam.gre.array), gre_te, magnitude,
                                                                   acquisition_contrast="PROTON_DENSITY"),
                                g, thick, gradient_echo, echo_pulse_sequence="GRADIENT")),
        ("04_GRE_P", SeriesSpec("gre_multiecho_6e_phase", 4,
                                _echo_stacks(phase_values, gre_te, ("ORIGINAL", "PRIMARY", "P", "ND"),
                                             rescale_slope=2.0, rescale_intercept=-4096.0, bits_stored=12,
                                             complex_component="PHASE", acquisition_contrast="PROTON_DENSITY"),
                                g, thick, gradient_echo, echo_pulse_sequence="GRADIENT")),
        ("05_Dixon_W", SeriesSpec("dixon_W", 5, [ImageStack(exam.vendor_water.array,
                                                             ("DERIVED", "PRIMARY", "W", "WATER"))],
                                  g, thick, vendor, echo_pulse_sequence="GRADIENT")),
        ("06_Dixon_F", SeriesSpec("dixon_F", 6, [ImageStack(exam.vendor_fat.array,
                                                             ("DERIVED", "PRIMARY", "F", "FAT"))],
                                  g, thick, vendor, echo_pulse_sequence="GRADIENT")),
        ("07_Dixon_FF", SeriesSpec("dixon_FF", 7, [ImageStack(exam.vendor_ff.array,
                                                               ("DERIVED", "PRIMARY", "FF", "FAT_FRACTION"),
                                                               rescale_slope=0.1)],
                                   g, thick, vendor, units="%", echo_pulse_sequence="GRADIENT")),
    ]


def write_truth(exam, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, volume, dtype in (("muscle_labels", exam.muscle_labels, np.int16),
                                ("tissue_labels", exam.tissue_labels, np.int16),
                                ("water_t2_ms", exam.water_t2_ms, np.float32),
                                ("ff_percent", exam.ff_percent, np.float32),
                                ("b1", exam.b1, np.float32), ("b0_hz", exam.b0_hz, np.float32),
                                ("r2star_per_s", exam.r2star_per_s, np.float32)):
        paths[name] = write_volume(volume, folder / f"{name}.nii.gz", dtype)
    voxel_ml = exam.geometry.voxel_volume_ml()
    labels = exam.muscle_labels.array
    info = {
        "seed": exam.seed, "size": exam.size, "field_strength_t": exam.field_strength_t,
        "noise_sigma": exam.noise_sigma,
        "mese": {"echo_times_ms": list(exam.mese.echo_times_ms), "refocusing_angle_deg": 180.0,
                 "profile": "3d"},
        "gre": {"echo_times_ms": list(exam.gre.echo_times_ms), "precession_clockwise": True},
        "tissue_codes": {str(k): v for k, v in exam.tissue_names.items()},
        "muscles": {str(v): {**entry, "volume_ml": round(float((labels == v).sum() * voxel_ml), 3)}
                    for v, entry in exam.truth.items()},
    }
    paths["truth_json"] = write_text_atomic(folder / "truth.json", json.dumps(info, indent=2))
    return paths


def write_exam(exam, folder, flavour: str = "classic") -> dict:
    """Write the exam's DICOM study under folder/dicom and its truth under folder/truth.

    Returns {"dicom": folder, "series": {name: [files]}, "truth": {name: file}}.
    """
    folder = Path(folder)
    study = _study(exam)
    dicom_root = folder / "dicom"
    written = {}
    entropy = f"{exam.seed}-{exam.size}-{flavour}"
    for name, spec in track(exam_series(exam), desc=f"writing {flavour} DICOM"):
        written[name] = write_series(study, spec, dicom_root / name, flavour, entropy)
    return {"dicom": dicom_root, "series": written, "truth": write_truth(exam, folder / "truth")}
