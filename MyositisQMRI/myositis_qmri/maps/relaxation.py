"""Tissue relaxation constants at 3 T shared by the phantom and the fits (ms).

Fat T2 151 ms is the usual fixed value of bi-component EPG water-T2 fits (Marty et al.,
NMR Biomed 2016); T1 values follow published 3 T skeletal muscle and fat measurements.
"""
WATER_T1_MS = 1400.0
FAT_T1_MS = 365.0
FAT_T2_MS = 151.0
