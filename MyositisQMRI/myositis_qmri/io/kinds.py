"""Vocabularies for what an image is (`ImageKind`) and what a series is for (`SeriesClass`)."""
from __future__ import annotations

from enum import Enum


class ImageKind(str, Enum):
    MAGNITUDE = "magnitude"
    PHASE = "phase"
    REAL = "real"
    IMAGINARY = "imaginary"
    COMPLEX = "complex"
    WATER = "water"
    FAT = "fat"
    FAT_FRACTION = "ff"
    IN_PHASE = "in_phase"
    OPPOSED_PHASE = "opposed_phase"
    T2_MAP = "t2_map"
    R2STAR_MAP = "r2star_map"
    LABELS = "labels"


class SeriesClass(str, Enum):
    MESE = "mese"                  # multi-echo spin echo, for T2 mapping
    MULTIECHO_GRE = "multiecho_gre"  # Dixon / chemical-shift encoded gradient echo
    VENDOR_WATER = "vendor_water"
    VENDOR_FAT = "vendor_fat"
    VENDOR_FF = "vendor_ff"
    VENDOR_T2 = "vendor_t2"        # scanner T2 map (MapIt, Cartigram, ...)
    T1W = "t1w"
    T2W = "t2w"
    STIR = "stir"
    STRUCTURAL = "structural"      # structural, weighting unknown
    UNKNOWN = "unknown"


STRUCTURAL_CLASSES = (SeriesClass.T1W, SeriesClass.T2W, SeriesClass.STIR, SeriesClass.STRUCTURAL,
                      SeriesClass.VENDOR_WATER, SeriesClass.VENDOR_FAT)
