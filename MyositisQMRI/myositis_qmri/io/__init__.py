"""Input and output: DICOM discovery and series assembly, NIfTI/NRRD, atomic writing.

`read_volume`/`read_echo_series` read NIfTI/NRRD; the DICOM reader (`dicom.py`) and study
discovery (`discover.py`) turn folders and files into the same `Volume`/`EchoSeries` objects.
"""
from .atomic import atomic_path, write_bytes_atomic, write_text_atomic
from .echo_times import echo_times_to_ms, parse_te_ms_argument, require_uniform_spacing
from .kinds import ImageKind, SeriesClass
from .nifti import (is_image_file, read_echo_files, read_echo_series, read_volume, write_echo_series,
                    write_volume)
