"""The reconstructed head an animation drives: its parameters, model, texture and fitted light."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.core.params import HeadParams
from headcast.io import recon
from headcast.model.head_model import HeadModel
from headcast.render.gl import DEFAULT_LIGHT, LIGHTS


@dataclass
class Subject:
    """The reconstructed head: parameters, model, the texture (image, uv, uv_faces) and the texture stage's
    fitted SH light (9, 3) (:mod:`headcast.core.sh`, the capture camera's view frame) when present."""

    params: HeadParams
    model: HeadModel
    texture: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    light: np.ndarray | None = None


def load_subject(recon_dir: str | Path, model_spec: str | HeadModel | None = None, texture: bool = True) -> Subject:
    """Read a reconstruction folder (:mod:`headcast.io.recon`); the model (a name, a path or a loaded
    model) must be the one it was made with. ``texture``: read the texture too (its OBJ takes about a
    second to parse; parameters-only runs leave it)."""
    from headcast.model.registry import resolve_model

    d, params = recon.read_checked(recon_dir)
    model = model_spec if isinstance(model_spec, HeadModel) else resolve_model(model_spec or params.model)
    recon.check_model(d, params, model)
    model = recon.with_offsets(model, recon.read_offsets(d, model.n_vertices))  # the detail layer, if any
    subject = Subject(params, model, None)
    return with_appearance(subject, d, texture)


def with_appearance(subject: Subject, recon_dir: str | Path, texture: bool = True) -> Subject:
    """``subject`` with the texture (when ``texture``) and the fitted light its folder holds now (the demo
    reads them once its texture stage is done)."""
    d = Path(recon_dir)
    tex = recon.read_texture(d, subject.model.faces) if texture else None
    lighting = recon.read_lighting(d)
    return replace(subject, texture=None if tex is None else (tex.image(), tex.uv, tex.uv_faces),
                   light=None if lighting is None else np.asarray(lighting.sh, dtype=np.float64).reshape(9, 3))


def subject_light(subject: Subject, light: str = DEFAULT_LIGHT) -> np.ndarray | None:
    """The SH light (9, 3) previews use: the subject's fitted light for ``fitted`` when it has one, else
    None (the renderer's neutral light)."""
    if light not in LIGHTS:
        raise HeadcastError(f"--light must be one of {', '.join(LIGHTS)}, not {light!r}")
    return subject.light if light == "fitted" else None
