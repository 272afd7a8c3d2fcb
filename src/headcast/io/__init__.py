"""On-disk formats, one module each with its read and write (reconstruction and animation folders,
OBJ/PLY, GLB, model .npz), checked input readers and atomic outputs. See docs/formats.md.
"""
