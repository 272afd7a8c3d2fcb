"""Telepresence (the paper's section 3): a versioned, authenticated parameter stream.

- :mod:`headcast.stream.wire`: message layout, caps, :class:`~headcast.stream.wire.ProtocolError`;
  :mod:`headcast.stream.introduction` the INIT body.
- :mod:`headcast.stream.codec`: the ``paper`` (raw float32) and ``compact`` (quantised, predicted,
  arithmetic-coded) profiles; :mod:`headcast.stream.coder` the entropy coder.
- :mod:`headcast.stream.auth`: Ed25519 identities, session MAC keys, trust, replay window.
- :mod:`headcast.stream.session`: transport-free sender and receiver.
- :mod:`headcast.stream.files`: ``encode_file`` / ``decode_file`` and the size/accuracy report.
- live link: :mod:`~headcast.stream.source` (tracking as the video plays), :mod:`~headcast.stream.sender`,
  :mod:`~headcast.stream.receiver` (one isolated session per connection; :mod:`~headcast.stream.heads`
  admits an INIT's head, :mod:`~headcast.stream.peers` bounds what each peer may cost,
  :mod:`~headcast.stream.recorder` renders the shown session into the MP4 with
  :mod:`~headcast.stream.renderer`), :mod:`~headcast.stream.metrics` (counters, latency report);
  :mod:`headcast.stream.live`: the send/receive commands.

The byte layout is documented in docs/protocol.md.
"""
