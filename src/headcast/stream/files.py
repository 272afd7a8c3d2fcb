"""File round trip: ``encode_file(ANIM_DIR) -> STREAM`` and ``decode_file(STREAM) -> DIR``, with the
size, bit-rate and accuracy report.

A file stream is ``INIT | FRAME * N | END`` (see docs/protocol.md); the END is an Ed25519 signature
over every byte before it, and :func:`decode_file` writes nothing unless it verifies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO

import numpy as np

from headcast.core.errors import HeadcastError
from headcast.io.outputs import staged_output
from headcast.stream import auth
from headcast.stream import codec as K
from headcast.stream.session import ReceiverSession, SenderSession
from headcast.stream.wire import (
    COMPACT,
    END,
    ETA_PAPER,
    ETA_SIM,
    FRAME,
    FRAME_PREFIX,
    HEADER_SIZE,
    INIT,
    N_LAMBDA,
    PAPER,
    PROFILES,
    TAG_SIZE,
    InitInfo,
    ProtocolError,
    split_stream,
)

RAW_FRAME_BYTES = 256 * 256 * 3  # the paper's uncompressed 256x256 RGB frame: 196608 bytes
DEFAULT_TARGET_MM = 0.5
DEFAULT_KEY_INTERVAL = 25


# -- inputs ------------------------------------------------------------------------------------
def read_animation(anim_dir: str | Path) -> tuple[list[K.ParamFrame], dict]:
    """ParamFrames and metadata (fps, beta, model, eta_kind) from an animation folder's params.npz."""
    d = Path(anim_dir)
    p = d / "params.npz"
    if not p.is_file():
        raise HeadcastError(f"{d} has no params.npz (is it an animation folder from 'headcast animate'?)")
    try:
        with np.load(p, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise HeadcastError(f"{p} is not readable ({e.__class__.__name__})") from None
    for k in ("theta", "psi", "beta"):
        if k not in a:
            raise HeadcastError(f"{p} has no '{k}' array")
    theta = np.asarray(a["theta"], dtype=np.float64)
    psi = np.asarray(a["psi"], dtype=np.float64)
    n = len(theta)
    if theta.shape != (n, 15) or psi.ndim != 2 or len(psi) != n or n == 0:
        raise HeadcastError(f"{p}: theta must be (N, 15) and psi (N, E); got {theta.shape} and {psi.shape}")
    if "eta" in a:
        eta, kind = np.asarray(a["eta"], dtype=np.float64).reshape(n, -1), ETA_PAPER
    elif "scale" in a and "translation" in a:
        eta = np.c_[np.asarray(a["scale"], dtype=np.float64).reshape(n), np.asarray(a["translation"]).reshape(n, 3)]
        kind = ETA_SIM
    else:
        raise HeadcastError(f"{p} has neither 'eta' nor 'scale' + 'translation'")
    fps = float(a["fps"]) if "fps" in a else None
    times = a.get("time", a.get("times"))
    if times is None:
        if fps is None:
            raise HeadcastError(f"{p} has neither 'time' nor 'fps'")
        times = np.arange(n) / fps
    times = np.asarray(times, dtype=np.float64)
    if fps is None:
        fps = float(1.0 / np.median(np.diff(times))) if n > 1 else 25.0
    face = np.asarray(a.get("face_found", np.ones(n, bool)), dtype=bool)
    frames = [K.ParamFrame(i, float(times[i]), theta[i], psi[i], eta[i], bool(face[i])) for i in range(n)]
    # frames before the first face have no parameters to send
    meta = {"fps": fps, "beta": np.asarray(a["beta"], dtype=np.float64), "model": str(a.get("model", "ict")),
            "eta_kind": kind}
    return frames, meta


def read_appearance(recon_dir: str | Path | None) -> dict:
    """lambda (27,), rho and the albedo PNG bytes from a textured reconstruction folder (all optional)."""
    out = {"lam": None, "rho": None, "albedo_png": None}
    if recon_dir is None:
        return out
    d = Path(recon_dir)
    lj = d / "lighting.json"
    if lj.is_file():
        js = json.loads(lj.read_text())
        sh = np.asarray(js.get("sh", []), dtype=np.float64).reshape(-1)
        if sh.size == N_LAMBDA:
            out["lam"] = sh
        if js.get("rho") is not None:
            out["rho"] = np.asarray(js["rho"], dtype=np.float64).reshape(-1)
    if out["rho"] is None and (d / "albedo.png").is_file():
        out["albedo_png"] = (d / "albedo.png").read_bytes()
    return out


def make_init(meta: dict, profile: str, appearance: dict | None = None, model=None, sender: str = "default",
              target_mm: float = DEFAULT_TARGET_MM, key_interval: int = DEFAULT_KEY_INTERVAL,
              eta_ref: np.ndarray | None = None) -> InitInfo:
    """The stream's InitInfo; the compact profile's steps need the model (see :func:`codec.steps_for`)."""
    if profile not in PROFILES:
        raise HeadcastError(f"unknown profile {profile!r} (paper or compact)")
    prof = PROFILES[profile]
    app = appearance or {}
    beta = np.asarray(meta["beta"], dtype=np.float64)
    n_expr = int(meta["n_expr"])
    info = InitInfo(meta["model"], beta.size, n_expr, beta, app.get("lam"), app.get("rho"), app.get("albedo_png"),
                    float(meta["fps"]), prof, 6 if prof == PAPER else 15, meta["eta_kind"], int(key_interval),
                    None, sender)
    if prof == COMPACT:
        if model is None:
            from headcast.model.registry import resolve_model

            model = resolve_model(meta["model"])
        info.steps = K.steps_for(model, beta, 15, meta["eta_kind"], eta_ref if eta_ref is not None else [3000.0],
                                 target_mm)
    return info


# -- encode ------------------------------------------------------------------------------------
def encode_frames(frames: list[K.ParamFrame], info: InitInfo, key) -> tuple[bytes, list[int]]:
    """The whole file stream and the size of each FRAME message."""
    s = SenderSession(info, key, file_mode=True)
    parts = [s.init()]
    sizes = []
    started = False
    for f in frames:
        if not started and not f.face:
            continue  # nothing to hold before the first face
        started = True
        m = s.frame(f)
        parts.append(m)
        sizes.append(len(m))
    parts.append(s.end())
    return b"".join(parts), sizes


def encode_file(anim_dir: str | Path, profile: str, out_stream: str | Path | BinaryIO, key_path: str | Path | None = None,
                recon_dir: str | Path | None = None, target_mm: float = DEFAULT_TARGET_MM,
                key_interval: int = DEFAULT_KEY_INTERVAL, sender: str = "default", model=None,
                measure: bool = True) -> dict:
    """Encode an animation folder into a signed file stream; returns the report (:func:`stream_report`)."""
    frames, meta = read_animation(anim_dir)
    meta["n_expr"] = frames[0].psi.size
    if model is None:
        from headcast.model.registry import resolve_model

        model = resolve_model(meta["model"])
    first = next((f for f in frames if f.face), None)
    if first is None:
        raise HeadcastError(f"{anim_dir}: no frame has a face; nothing to stream")
    info = make_init(meta, profile, read_appearance(recon_dir), model, sender, target_mm, key_interval, first.eta)
    key = auth.load_private_key(key_path)
    data, sizes = encode_frames(frames, info, key)
    if hasattr(out_stream, "write"):
        out_stream.write(data)
    else:
        Path(out_stream).write_bytes(data)
    report = stream_report(data, info)
    if measure:
        dec = decode_bytes(data, auth.Trust(auth.public_bytes(key)))
        report.update(accuracy(model, frames, dec["frames"], info))
    return report


# -- decode ------------------------------------------------------------------------------------
def decode_bytes(data: bytes, trust: auth.Trust, log=None) -> dict:
    """Authenticate and decode a whole file stream: {'info', 'frames' (list of DecodedFrame)}."""
    rx = ReceiverSession(trust, file_mode=True)
    frames = []
    msgs = list(split_stream(data))
    if not msgs or msgs[-1].type != END:
        raise ProtocolError("stream has no END message (truncated or unsigned)")
    for m in msgs:
        frames += rx.handle(m.raw)
    if not rx.ended:
        raise ProtocolError("stream END was not verified")
    return {"info": rx.info, "frames": frames, "stats": rx.stats}


def decode_file(stream: str | Path | BinaryIO, out_dir: str | Path, trust_key: str | Path | None = None,
                log=None) -> dict:
    """Decode a file stream into ``out_dir``: params.npz (time, theta, psi, eta, face_found, seq, beta, model,
    fps), init.json, albedo.png when the stream carries one, report.json. Nothing is written unless the
    stream's signature verifies against the trusted key (``trust_key``, else trust on first use)."""
    data = stream.read() if hasattr(stream, "read") else Path(stream).read_bytes()
    dec = decode_bytes(data, auth.Trust.from_file(trust_key), log)
    info, frames = dec["info"], dec["frames"]
    report = stream_report(data, info)
    with staged_output(out_dir) as tmp:
        eta_key = "eta" if info.eta_kind == ETA_PAPER else "placement"
        np.savez(tmp / "params.npz", seq=np.array([f.seq for f in frames]), time=np.array([f.t for f in frames]),
                 theta=np.array([f.theta for f in frames]), psi=np.array([f.psi for f in frames]),
                 **{eta_key: np.array([f.eta for f in frames])},
                 face_found=np.array([f.face for f in frames]), beta=info.beta, model=np.str_(info.model),
                 fps=np.float64(info.fps))
        js = {"model": info.model, "sender": info.sender, "sender_key": auth.fingerprint(info.sign_pub),
              "profile": "compact" if info.profile == COMPACT else "paper", "fps": info.fps,
              "n_shape": info.n_shape, "n_expr": info.n_expr, "key_interval": info.key_interval,
              "lambda": None if info.lam is None else info.lam.tolist(),
              "rho": None if info.rho is None else info.rho.tolist(),
              "steps": None if info.steps is None else info.steps.tolist()}
        (tmp / "init.json").write_text(json.dumps(js, indent=2) + "\n")
        if info.albedo_png:
            (tmp / "albedo.png").write_bytes(info.albedo_png)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# -- reports -----------------------------------------------------------------------------------
def stream_report(data: bytes, info: InitInfo) -> dict:
    """Sizes: the paper's counts (payload only) and everything on the wire, per frame and per second."""
    frame_sizes, init_size, end_size = [], 0, 0
    for m in split_stream(data):
        if m.type == INIT:
            init_size = len(m.raw)
        elif m.type == FRAME:
            frame_sizes.append(len(m.raw))
        elif m.type == END:
            end_size = len(m.raw)
    fs = np.array(frame_sizes, dtype=np.float64) if frame_sizes else np.zeros(1)
    overhead = HEADER_SIZE + FRAME_PREFIX.size + TAG_SIZE
    payload = fs - overhead
    n_param_floats = info.n_shape + (0 if info.rho is None else info.rho.size) + (0 if info.lam is None else info.lam.size)
    fps = info.fps
    return {
        "profile": "compact" if info.profile == COMPACT else "paper",
        "model": info.model, "fps": fps, "frames": len(frame_sizes),
        "init_bytes": init_size, "init_parameter_bytes": 4 * n_param_floats,
        "init_parameter_definition": "4 * (beta + rho + lambda floats): the paper's (N + M + K) * 4",
        "init_albedo_png_bytes": len(info.albedo_png or b""),
        "end_bytes": end_size,
        "frame_payload_bytes_mean": float(payload.mean()),
        "frame_overhead_bytes": overhead,
        "frame_overhead_definition": f"header {HEADER_SIZE} + seq/timestamp {FRAME_PREFIX.size} + HMAC tag {TAG_SIZE}",
        "frame_bytes_mean": float(fs.mean()),
        "frame_bytes_max": float(fs.max()),
        "kbit_s_payload": float(payload.mean() * 8 * fps / 1000),
        "kbit_s_total": float(fs.mean() * 8 * fps / 1000),
        "ratio_raw_256_payload": float(RAW_FRAME_BYTES / max(payload.mean(), 1e-9)),
        "ratio_raw_256_total": float(RAW_FRAME_BYTES / fs.mean()),
        "stream_bytes": len(data),
        "key_interval": info.key_interval if info.profile == COMPACT else 1,
    }


def accuracy(model, frames: list[K.ParamFrame], decoded, info: InitInfo, batch: int = 64) -> dict:
    """Vertex error of the decoded parameters against the original ones (mm): model frame (pose and
    expression) and including the placement eta (image-plane displacement over the scale, at the head)."""
    import torch

    from headcast.model.layer import HeadLayer

    by_seq = {f.seq: f for f in frames}
    pairs = [(by_seq[d.seq], d) for d in decoded if d.seq in by_seq and by_seq[d.seq].face]
    if not pairs:
        return {"vertex_error_mm_mean": float("nan")}
    layer = HeadLayer(model, dtype=torch.float64)
    beta = torch.as_tensor(info.beta[None], dtype=torch.float64)
    errs, perrs = [], []
    for a in range(0, len(pairs), batch):
        chunk = pairs[a:a + batch]
        T = lambda x: torch.as_tensor(np.array(x), dtype=torch.float64)  # noqa: E731
        with torch.no_grad():
            v = layer.vertices(beta.expand(len(chunk), -1), T([o.psi for o, _ in chunk]), T([o.theta for o, _ in chunk])).numpy()
            w = layer.vertices(beta.expand(len(chunk), -1), T([d.psi for _, d in chunk]), T([d.theta for _, d in chunk])).numpy()
        errs.append(np.linalg.norm(v - w, axis=-1).ravel())
        for (o, d), vi, wi in zip(chunk, v, w):
            if info.eta_kind == ETA_PAPER:
                P = np.array([[1.0, 0, 0], [0, -1.0, 0]])
                po = o.eta[0] * vi @ P.T + o.eta[1:]
                pd = d.eta[0] * wi @ P.T + d.eta[1:]
                perrs.append(np.linalg.norm(po - pd, axis=-1) / o.eta[0])
            else:
                F = np.diag([1.0, -1.0, -1.0])
                po = o.eta[0] * vi @ F + o.eta[1:]
                pd = d.eta[0] * wi @ F + d.eta[1:]
                perrs.append(np.linalg.norm(po - pd, axis=-1))
    e = np.concatenate(errs) * 1000
    pe = np.concatenate(perrs) * 1000
    return {"vertex_error_mm_mean": float(e.mean()), "vertex_error_mm_p99": float(np.percentile(e, 99)),
            "vertex_error_mm_max": float(e.max()),
            "placed_vertex_error_mm_mean": float(pe.mean()), "placed_vertex_error_mm_max": float(pe.max()),
            "vertex_error_definition": "mean over frames and all model vertices of |v(decoded) - v(original)|, "
                                       "model frame; 'placed' adds the placement eta (image-plane error / s)",
            "frames_compared": len(pairs)}
