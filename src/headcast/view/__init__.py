"""Browser viewer for exported heads (``headcast view``) and the live page (``headcast receive --web``)."""

from headcast.view.server import find_three, head_glb, serve, showing, wait_until_stopped

__all__ = ["find_three", "head_glb", "serve", "showing", "wait_until_stopped"]
