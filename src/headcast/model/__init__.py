"""Head models in FLAME's structure: data (HeadModel), functional core (lbs), torch layer (HeadLayer)."""

from headcast.model.head_model import HeadModel, load_model, save_model

__all__ = ["HeadModel", "HeadLayer", "HeadOutput", "load_model", "save_model"]


def __getattr__(name):  # the layer pulls in torch (2-3 s to import): load it on first use
    if name in ("HeadLayer", "HeadOutput"):
        from headcast.model import layer

        return getattr(layer, name)
    raise AttributeError(name)
