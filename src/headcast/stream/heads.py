"""The receiver's admission of a head: what an authenticated INIT asks to be shown, checked before any
sink builds it.

- The model id is a name (:data:`MODEL_NAME`: letters, digits, ``-`` and ``_``), looked up in the
  model directory only (``HEADCAST_HOME/models/NAME.npz``, never built, never a path) or equal to the
  model the receiver preloaded; its sizes must match the stream's.
- The albedo PNG's size is read from its header and capped (:data:`MAX_ALBEDO_SIDE`) before it is
  decoded; then it must decode to that size.
"""

from __future__ import annotations

import re
import threading

from headcast.core.errors import HeadcastError
from headcast.stream.introduction import check_png
from headcast.stream.peers import shown
from headcast.stream.wire import InitInfo, ProtocolError

MODEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_ALBEDO_SIDE = 2048     # texels a side: headcast's own albedo maps are at most 2048 (texture --size)
MAX_MODELS = 4             # distinct models a receiver keeps loaded


class Heads:
    """Admits the heads of INITs for one receiver; ``model`` is the preloaded one (used when named).
    Thread-safe: :meth:`admit` runs in worker threads, one at a time (bounded memory for decoding)."""

    def __init__(self, model=None):
        self.models = {model.name: model} if model is not None else {}
        self._lock = threading.Lock()

    def admit(self, info: InitInfo):
        """The model to show ``info`` with; ProtocolError (one line, remote strings escaped) when the
        INIT names no model here, its sizes disagree, or its albedo map is too big or broken."""
        with self._lock:
            model = self._model(info.model)
            if model.n_shape < info.n_shape or model.n_expr != info.n_expr:
                raise ProtocolError(f"INIT: model {shown(info.model)} here has {model.n_shape} shape and "
                                    f"{model.n_expr} expression components, the stream {info.n_shape}/{info.n_expr}")
            if info.albedo_png:
                check_albedo(bytes(info.albedo_png))
            return model

    def _model(self, name: str):
        if name in self.models:
            return self.models[name]
        if not MODEL_NAME.fullmatch(name):
            raise ProtocolError(f"INIT: model id {shown(name)} is not a model name (1 to 32 letters, digits, - or _)")
        from headcast.model.head_model import load_model
        from headcast.model.registry import model_path

        path = model_path(name)
        if not path.is_file():
            raise ProtocolError(f"INIT: no head model {shown(name)} here")
        try:
            model = load_model(path)
        except HeadcastError as e:
            raise ProtocolError(f"INIT: head model {shown(name)} cannot be loaded here ({str(e)[:120]})") from None
        if model.name != name:
            raise ProtocolError(f"INIT: {path.name} holds the model {shown(model.name)}, not {shown(name)}")
        if len(self.models) >= MAX_MODELS:
            self.models.pop(next(iter(self.models)))
        self.models[name] = model
        return model


def check_albedo(png: bytes) -> None:
    """ProtocolError unless ``png`` is a PNG of at most :data:`MAX_ALBEDO_SIDE` a side (read from its
    header before decoding: at most 2048 x 2048 x 4 bytes = 16 MB decoded) that decodes to that size."""
    w, h = check_png(png)
    if w > MAX_ALBEDO_SIDE or h > MAX_ALBEDO_SIDE:
        raise ProtocolError(f"INIT: albedo map of {w}x{h} exceeds the receiver's {MAX_ALBEDO_SIDE}-texel side cap")
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(png), formats=("PNG",)) as im:
            if im.size != (w, h):
                raise ProtocolError("INIT: albedo map's size differs from its header")
            im.load()
    except ProtocolError:
        raise
    except Exception as e:  # Pillow raises many kinds on a damaged file
        raise ProtocolError(f"INIT: albedo map does not decode ({e.__class__.__name__})") from None
