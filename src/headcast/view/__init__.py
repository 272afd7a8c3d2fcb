"""Browser viewer for exported heads (``headcast view``)."""

from headcast.view.server import find_three, head_glb, serve, view

__all__ = ["find_three", "head_glb", "serve", "view"]
