"""The bottom layer: what every stage shares (errors, parameters and sizes, camera and the model-to-camera
transform, SH basis, geometry, the ray-cast / closest-point scene, rigid alignment, paths, bounded file reading).

Imports nothing from headcast above it (see docs/architecture.md).
"""
