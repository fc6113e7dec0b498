"""Helpers for the MyositisQMRI Slicer module.

Every module here except `slicer_bridge` is Slicer-free (plain Python, testable with pytest):
command building and background jobs, progress parsing, the study and report table models,
grade colours, geometry conversion and dependency checks. `slicer_bridge` imports slicer
lazily and holds the node <-> file glue.
"""
