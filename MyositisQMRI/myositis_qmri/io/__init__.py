"""Input and output: DICOM discovery and series assembly, NIfTI/NRRD, atomic writing.

`read_volume`/`read_echo_series` read NIfTI/NRRD; the DICOM reader (`dicom.py`) and study
discovery (`discover.py`) turn folders and files into the same `Volume`/`EchoSeries` objects.
"""
from .atomic import atomic_path, write_bytes_atomic, write_text_atomic
from .echo_times import echo_times_to_ms, parse_te_ms_argument, require_uniform_spacing
from .kinds import ImageKind, SeriesClass
from .nifti import (is_image_file, read_echo_files, read_echo_series, read_volume, write_echo_series,
                    write_volume)
from .dicom import DicomScan, DicomSeries, read_dicom
from .dicom_values import phase_to_radians
from .discover import Study, discover, pair_magnitude_phase
from .load import load_echo_series, load_magnitude_phase, load_volume, select_series
