"""Texturing (the paper's third stage): SH lighting and a UV albedo map from the photo.

:func:`texture_frame` textures a fitted head in its photo (arrays in, arrays out);
:func:`texture_reconstruction` does it for a ``headcast reconstruct`` folder and writes the
textured OBJ, the albedo PNG, the lighting, a picture and ``texture_report.json``.
"""

from headcast.texture.albedo_model import AlbedoModel, fit_albedo_model, load_albedo_model
from headcast.texture.atlas import Atlas, TexelMap, bake, build_atlas, rasterize_uv
from headcast.texture.core import TextureResult, TextureSpace, texture_frame, texture_space
from headcast.texture.lighting import fit_light, loss4, normalise_light
from headcast.texture.pipeline import texture_reconstruction

__all__ = ["AlbedoModel", "Atlas", "TexelMap", "TextureResult", "TextureSpace", "bake", "build_atlas",
           "fit_albedo_model", "fit_light", "load_albedo_model", "loss4", "normalise_light", "rasterize_uv",
           "texture_frame", "texture_reconstruction", "texture_space"]
