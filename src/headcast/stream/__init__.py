"""Telepresence (the paper's section 3): a versioned, authenticated parameter stream.

- :mod:`headcast.stream.wire`: message layout, caps, :class:`~headcast.stream.wire.ProtocolError`.
- :mod:`headcast.stream.codec`: the ``paper`` (raw float32) and ``compact`` (quantised, predicted,
  arithmetic-coded) profiles; :mod:`headcast.stream.coder` the entropy coder.
- :mod:`headcast.stream.auth`: Ed25519 identities, session MAC keys, trust, replay window.
- :mod:`headcast.stream.session`: transport-free sender and receiver.
- :mod:`headcast.stream.files`: ``encode_file`` / ``decode_file`` and the size/accuracy report.
- live link: :mod:`~headcast.stream.source` (tracking as the video plays), :mod:`~headcast.stream.sender`,
  :mod:`~headcast.stream.receiver` (with :mod:`~headcast.stream.renderer`, the MP4 render worker),
  :mod:`~headcast.stream.metrics` (latency report); :mod:`headcast.stream.live`: the send/receive commands.

The byte layout is documented in docs/protocol.md.
"""
