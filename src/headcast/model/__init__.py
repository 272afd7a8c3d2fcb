"""Head models in FLAME's structure: data (HeadModel), functional core (lbs), torch layer (HeadLayer)."""

from headcast.model.head_model import HeadModel, load_model, save_model
from headcast.model.layer import HeadLayer, HeadOutput

__all__ = ["HeadModel", "HeadLayer", "HeadOutput", "load_model", "save_model"]
