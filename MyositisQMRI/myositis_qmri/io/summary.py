"""One plain-value summary of a series (DICOM or image files), for `inspect --json` and logs."""
from __future__ import annotations


def series_summary(series, source: str) -> dict:
    """`series` is an io.dicom.DicomSeries or an io.discover file series (same attribute names)."""
    return {
        "description": series.description, "classification": series.series_class.value,
        "vendor": series.vendor, "field_strength_t": series.field_strength_t, "n_echoes": series.n_echoes,
        "echo_times_ms": [round(t, 3) for t in series.echo_times_ms],
        "image_kinds": sorted(k.value for k in series.image_kinds), "matrix": list(series.matrix),
        "voxel_size_mm": [round(v, 4) for v in series.spacing], "n_slices": series.n_slices,
        "mr_acquisition_type": series.mr_acquisition_type, "fat_suppressed": series.fat_suppressed,
        "series_uid": series.series_uid, "n_files": len(series.files), "source": source,
    }
