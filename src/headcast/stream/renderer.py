"""The receiver's picture: the head an INIT describes, rendered frame by frame (into the MP4 by
:class:`headcast.stream.recorder.RenderWorker`)."""

from __future__ import annotations

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.stream.session import DecodedFrame
from headcast.stream.wire import InitInfo


def init_head(info: InitInfo, model=None):
    """The head model an INIT names (``model`` when the names match, else resolved here) with the sent detail
    offsets, and the sent beta zero-padded to its components; HeadcastError when the sizes disagree."""
    if model is None or model.name != info.model:
        from headcast.model.registry import resolve_model

        model = resolve_model(info.model, build_missing=info.model == "ict")
    if model.n_shape < info.n_shape or model.n_expr != info.n_expr:
        raise HeadcastError(f"model {info.model!r} here has {model.n_shape}/{model.n_expr} components, "
                            f"the stream {info.n_shape}/{info.n_expr}")
    if info.offsets is not None:  # the detail layer: the sender's model carries it in its rest shape
        from headcast.io.recon import with_offsets

        if len(info.offsets) != model.n_vertices:
            raise HeadcastError(f"the stream's detail offsets are for {len(info.offsets)} vertices, model "
                                f"{info.model!r} here has {model.n_vertices}")
        model = with_offsets(model, info.offsets)
    beta = np.zeros(model.n_shape)
    beta[:info.n_shape] = info.beta
    return model, beta


def init_light(info: InitInfo) -> np.ndarray | None:
    """The SH light (9, 3) an INIT carries (its lam), or None."""
    return None if info.lam is None else np.asarray(info.lam, dtype=np.float64).reshape(9, 3)


class ReceivedHeadRenderer:
    """Rebuilds the head from an INIT (model, beta, albedo, SH light lam) and renders frames (theta, psi)
    with the animation stage's fixed face camera (OpenGL), lit by the sent 27 SH numbers like the
    sender's previews (the neutral light when the INIT has none)."""

    def __init__(self, info: InitInfo, size: int = 512, model=None):
        from headcast.animate.preview import HeadView
        from headcast.animate.subject import Subject
        from headcast.core.params import N_POSE, HeadParams

        model, beta = init_head(info, model)
        texture = self._texture(info, model)
        params = HeadParams(beta, np.zeros(model.n_expr), np.zeros(N_POSE), model=info.model)
        self.view = HeadView(Subject(params, model, texture, init_light(info)), size)

    @staticmethod
    def _texture(info: InitInfo, model):
        if not info.albedo_png or model.uv is None:
            return None
        from headcast.io.validate import read_image
        from headcast.texture.atlas import build_atlas

        img = read_image("albedo map", "the stream's", data=bytes(info.albedo_png), formats=("PNG",))
        atlas = build_atlas(model.uv, model.uv_faces, model.v_template, model.faces)
        return img, atlas.uv, atlas.uv_faces

    def render(self, f: DecodedFrame) -> np.ndarray:
        return self.view.render(self.view.vertices(f.theta[None], f.psi[None])[0])

    def release(self) -> None:
        self.view.release()
