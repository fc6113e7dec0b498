"""MyositisQMRI core: quantitative muscle MRI for idiopathic inflammatory myopathies.

Slicer-free: numpy, SimpleITK, pydicom and torch only. Stages live in sub-packages
(io, maps, segmentation, report); the `myositis-qmri` command wires them together.
"""
__version__ = "0.1.0"
