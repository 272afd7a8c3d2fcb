"""File round trip: ``encode_file(ANIM_DIR) -> STREAM`` and ``decode_file(STREAM) -> DIR``, with the
size, bit-rate and accuracy report.

A file stream is ``INIT | FRAME * N | END`` (see docs/protocol.md); the END is an Ed25519 signature
over every byte before it, and :func:`decode_file` writes nothing unless it verifies.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np

from headcast.core.camera import to_camera
from headcast.core.errors import HeadcastError
from headcast.core.files import read_bytes, size_text
from headcast.core.params import N_POSE
from headcast.io.anim import ETA, PARAMS, Animation, read_animation, write_animation
from headcast.io.outputs import check_output_dir, check_output_file, staged_dir, staged_file
from headcast.io.recon import check_folder, read_albedo, read_lighting
from headcast.io.validate import MAX_STREAM_BYTES, check_number
from headcast.stream import auth
from headcast.stream import codec as K
from headcast.stream.session import ReceiverSession, SenderSession
from headcast.stream.wire import (
    COMPACT,
    END,
    ETA_PAPER,
    ETA_SIM,
    FRAME,
    HEADER_SIZE,
    INIT,
    MAX_KEY_INTERVAL,
    PAPER,
    PROFILES,
    TAG_SIZE,
    InitInfo,
    ProtocolError,
    split_stream,
    varint,
)

logger = logging.getLogger(__name__)

RAW_FRAME_BYTES = 256 * 256 * 3  # the paper's uncompressed 256x256 RGB frame: 196608 bytes
DEFAULT_TARGET_MM = 0.4
MIN_TARGET_MM, MAX_TARGET_MM = 0.001, 100.0  # --target-mm: the compact profile's vertex error budget
DEFAULT_KEY_INTERVAL = 50  # 2 s at 25 fps: a file can be entered there; live, each session starts with one


# -- inputs ------------------------------------------------------------------------------------
def animation_frames(anim_dir: str | Path) -> tuple[list[K.ParamFrame], dict]:
    """ParamFrames and metadata (fps, beta, model, eta_kind) of an animation folder (:mod:`headcast.io.anim`)."""
    anim = read_animation(anim_dir)
    if anim.beta is None:
        raise HeadcastError(f"{anim.source} has no 'beta' array (the subject's identity)")
    kind = ETA_PAPER if anim.placement_kind == ETA else ETA_SIM
    frames = [K.ParamFrame(i, float(anim.times[i]), anim.theta[i], anim.psi[i], anim.placement[i],
                           bool(anim.face_found[i])) for i in range(anim.n_frames)]
    # frames before the first face have no parameters to send
    meta = {"fps": anim.fps, "beta": anim.beta, "model": anim.model or "ict", "eta_kind": kind}
    return frames, meta


def read_params_offsets(recon_dir: str | Path) -> np.ndarray | None:
    """The detail layer's offsets (V, 3) of a reconstruction folder, or None (the receiver checks V against
    its model)."""
    from headcast.io.arrays import read_npz
    from headcast.io.recon import MAX_PARAMS_BYTES, PARAMS, read_offsets

    path = Path(recon_dir) / PARAMS
    if not path.is_file():
        return None
    z = read_npz(path, "reconstruction parameters", max_bytes=MAX_PARAMS_BYTES)
    return read_offsets(recon_dir, len(z["offsets"])) if "offsets" in z else None


def read_appearance(recon_dir: str | Path | None) -> dict:
    """lambda (27,), rho, the albedo PNG bytes and the detail layer's offsets from a textured reconstruction
    folder (all optional; the albedo only without rho, which stands for it)."""
    out = {"lam": None, "rho": None, "albedo_png": None, "offsets": None}
    if recon_dir is None:
        return out
    check_folder(recon_dir, required=())  # a mistyped --recon is an error, not a stream without its appearance
    out["offsets"] = read_params_offsets(recon_dir)
    light = read_lighting(recon_dir)
    if light is not None:
        out["lam"], out["rho"] = light.sh.reshape(-1), light.rho
    if out["rho"] is None:
        out["albedo_png"] = read_albedo(recon_dir)
    return out


def make_init(meta: dict, profile: str, appearance: dict | None = None, model=None, sender: str = "default",
              target_mm: float = DEFAULT_TARGET_MM, key_interval: int = DEFAULT_KEY_INTERVAL,
              eta_ref: np.ndarray | None = None) -> InitInfo:
    """The stream's InitInfo; the compact profile's steps need the model (see :func:`codec.steps_for`)."""
    if profile not in PROFILES:
        raise HeadcastError(f"unknown profile {profile!r} (paper or compact)")
    check_number(key_interval, "--key-interval", 1, MAX_KEY_INTERVAL, integer=True)
    prof = PROFILES[profile]
    app = appearance or {}
    beta = np.asarray(meta["beta"], dtype=np.float64)
    n_expr = int(meta["n_expr"])
    info = InitInfo(meta["model"], beta.size, n_expr, beta, app.get("lam"), app.get("rho"), app.get("albedo_png"),
                    float(meta["fps"]), prof, 6 if prof == PAPER else N_POSE, meta["eta_kind"], int(key_interval),
                    None, sender, offsets=app.get("offsets"))
    if prof == COMPACT:
        if model is None:
            from headcast.model.registry import resolve_model

            model = resolve_model(meta["model"])
        info.steps = K.steps_for(model, beta, N_POSE, meta["eta_kind"], eta_ref if eta_ref is not None else [3000.0],
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
                force: bool = False) -> dict:
    """Encode an animation folder into a signed file stream; returns the report (:func:`stream_report`).

    A path ``out_stream`` is written whole or not at all (:func:`headcast.io.outputs.staged_file`; ``force``
    replaces an existing file); nothing is written unless every frame encodes."""
    check_number(key_interval, "--key-interval", 1, MAX_KEY_INTERVAL, integer=True)
    check_number(target_mm, "--target-mm", MIN_TARGET_MM, MAX_TARGET_MM, unit="mm")
    inputs = (Path(anim_dir) / PARAMS, key_path)
    if not hasattr(out_stream, "write"):
        check_output_file(out_stream, force=force, inputs=inputs)  # refuse before the work
    appearance = read_appearance(recon_dir)
    frames, meta = animation_frames(anim_dir)
    _check_sendable(frames, Path(anim_dir) / PARAMS)
    meta["n_expr"] = frames[0].psi.size
    if model is None:
        from headcast.model.registry import resolve_model

        model = resolve_model(meta["model"])
    if meta["n_expr"] != model.n_expr:
        raise HeadcastError(f"{Path(anim_dir) / PARAMS}: psi has {meta['n_expr']} expression values per frame; "
                            f"model {model.name!r} has {model.n_expr}")
    first = next((f for f in frames if f.face), None)
    if first is None:
        raise HeadcastError(f"{anim_dir}: no frame has a face; nothing to stream")
    info = make_init(meta, profile, appearance, model, sender, target_mm, key_interval, first.eta)
    key = auth.load_private_key(key_path)
    data, sizes = encode_frames(frames, info, key)
    if hasattr(out_stream, "write"):
        out_stream.write(data)
    else:
        with staged_file(out_stream, force=force, inputs=inputs) as tmp:
            tmp.write_bytes(data)
    report = stream_report(data, info)
    dec = decode_bytes(data, auth.Trust(auth.public_bytes(key)))
    report.update(accuracy(model, frames, dec["frames"], info))
    return report


def _check_sendable(frames: list[K.ParamFrame], path: Path) -> None:
    """Every frame with a face must hold finite values as float32 (the paper profile's numbers on the wire)."""
    with np.errstate(over="ignore"):
        for f in frames:
            if f.face and not all(np.isfinite(np.asarray(x, np.float32)).all() for x in (f.theta, f.psi, f.eta)):
                raise HeadcastError(f"{path}: frame {f.seq} has a pose, expression or placement value that is not "
                                    "a finite 32-bit number")


# -- decode ------------------------------------------------------------------------------------
def decode_bytes(data: bytes, trust: auth.Trust) -> dict:
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
                force: bool = False) -> dict:
    """Decode a file stream into the animation folder ``out_dir`` (:mod:`headcast.io.anim`: params.npz with
    seq, frames.jsonl, report.json), with init.json and albedo.png when the stream carries one. Nothing is
    written unless the stream's signature verifies against the trusted key (``trust_key``, else trust on
    first use); ``force`` replaces an earlier decoded folder. A damaged stream is a ProtocolError naming it."""
    is_file = hasattr(stream, "read")
    name = getattr(stream, "name", "stream") if is_file else str(stream)
    inputs = (trust_key, None if is_file else stream)
    check_output_dir(out_dir, "decoded", force=force, inputs=inputs)
    data = stream.read(MAX_STREAM_BYTES + 1) if is_file else read_bytes(stream, "stream file", MAX_STREAM_BYTES)
    if len(data) > MAX_STREAM_BYTES:
        raise HeadcastError(f"stream file {name} is more than the {size_text(MAX_STREAM_BYTES)} headcast reads")
    try:
        dec = decode_bytes(data, auth.Trust.from_file(trust_key))
    except ProtocolError as e:
        raise ProtocolError(f"{name}: {e}") from None
    info, frames = dec["info"], dec["frames"]
    if not frames:
        raise HeadcastError(f"{name} holds no frames")
    report = stream_report(data, info)
    anim = Animation(np.array([f.t for f in frames]), np.array([f.theta for f in frames]),
                     np.array([f.psi for f in frames]), np.array([f.eta for f in frames]),
                     np.array([f.face for f in frames]), info.fps, info.beta, info.model,
                     {"seq": np.array([f.seq for f in frames])})
    with staged_dir(out_dir, "decoded", force=force, inputs=inputs) as tmp:
        write_animation(tmp, anim, ("seq",), report)
        js = {"model": info.model, "sender": info.sender, "sender_key": auth.fingerprint(info.sign_pub),
              "profile": "compact" if info.profile == COMPACT else "paper", "fps": info.fps,
              "n_shape": info.n_shape, "n_expr": info.n_expr, "key_interval": info.key_interval,
              "lambda": None if info.lam is None else info.lam.tolist(),
              "rho": None if info.rho is None else info.rho.tolist(),
              "steps": None if info.steps is None else info.steps.tolist()}
        (tmp / "init.json").write_text(json.dumps(js, indent=2) + "\n")
        if info.albedo_png:
            (tmp / "albedo.png").write_bytes(info.albedo_png)
    logger.debug("decode: %d frames into %s", len(frames), out_dir)
    return report


# -- reports -----------------------------------------------------------------------------------
def stream_report(data: bytes, info: InitInfo) -> dict:
    """Sizes: the paper's counts (payload only) and everything in the file or on the wire, per frame and
    per second. All-in: every byte of the stream (the INIT and END amortised over the frames); the live
    figures are those of the same frames sent live (each with a tag instead of a length, the HELLO and
    INIT instead of the INIT and END), WebSocket framing not counted. ``*_no_png``: without the albedo PNG
    (sent once, like a texture; 0 when the INIT has none)."""
    frames, payloads, live, init_size, end_size = [], [], [], 0, 0
    for m in split_stream(data):
        if m.type == INIT:
            init_size = len(m.raw)
        elif m.type == FRAME:
            frames.append(len(m.raw))
            payloads.append(len(m.body))
            live.append(len(m.raw) - len(varint(len(m.body))) + TAG_SIZE)
        elif m.type == END:
            end_size = len(m.raw)
    n = max(len(frames), 1)
    fs, pl, lv = (np.array(a or [0], dtype=np.float64) for a in (frames, payloads, live))
    png = len(info.albedo_png or b"")
    hello = HEADER_SIZE + 32
    live_all = (lv.sum() + hello + init_size) / n
    n_param_floats = info.n_shape + (0 if info.rho is None else info.rho.size) + (0 if info.lam is None else info.lam.size)
    fps = info.fps
    kbit = lambda b: float(b * 8 * fps / 1000)  # noqa: E731  (bytes per frame -> kbit/s)
    return {
        "profile": "compact" if info.profile == COMPACT else "paper",
        "model": info.model, "fps": fps, "frames": len(frames),
        "init_bytes": init_size, "init_parameter_bytes": 4 * n_param_floats,
        "init_parameter_definition": "4 * (beta + rho + lambda floats): the paper's (N + M + K) * 4",
        "init_albedo_png_bytes": png,
        "end_bytes": end_size,
        "frame_payload_bytes_mean": float(pl.mean()),
        "frame_overhead_bytes_mean": float((fs - pl).mean()),
        "frame_overhead_definition": "file: frame byte + sequence (1 byte, a varint on keyframes) + length varint; "
                                     f"live: the length replaced by a {TAG_SIZE}-byte HMAC tag",
        "frame_bytes_mean": float(fs.mean()),
        "frame_bytes_max": float(fs.max()),
        "live_frame_bytes_mean": float(lv.mean()),
        "file_bytes_per_frame_all_in": len(data) / n,
        "file_bytes_per_frame_all_in_no_png": (len(data) - png) / n,
        "live_bytes_per_frame_all_in": float(live_all),
        "live_bytes_per_frame_all_in_no_png": float(live_all - png / n),
        "kbit_s_payload": kbit(pl.mean()),
        "kbit_s_total": kbit(fs.mean()),
        "kbit_s_live_all_in_no_png": kbit(live_all - png / n),
        "ratio_raw_256_payload": float(RAW_FRAME_BYTES / max(pl.mean(), 1e-9)),
        "ratio_raw_256_total": float(RAW_FRAME_BYTES / max(fs.mean(), 1e-9)),
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
            if info.eta_kind == ETA_PAPER:  # orthographic: the camera frame's x, y plus (tx, ty) pixels
                po = to_camera(vi, o.eta[0], 0.0)[:, :2] + o.eta[1:]
                pd = to_camera(wi, d.eta[0], 0.0)[:, :2] + d.eta[1:]
                perrs.append(np.linalg.norm(po - pd, axis=-1) / o.eta[0])
            else:
                po = to_camera(vi, o.eta[0], o.eta[1:])
                pd = to_camera(wi, d.eta[0], d.eta[1:])
                perrs.append(np.linalg.norm(po - pd, axis=-1))
    e = np.concatenate(errs) * 1000
    pe = np.concatenate(perrs) * 1000
    return {"vertex_error_mm_mean": float(e.mean()), "vertex_error_mm_p99": float(np.percentile(e, 99)),
            "vertex_error_mm_max": float(e.max()),
            "placed_vertex_error_mm_mean": float(pe.mean()), "placed_vertex_error_mm_max": float(pe.max()),
            "vertex_error_definition": "mean over frames and all model vertices of |v(decoded) - v(original)|, "
                                       "model frame; 'placed' adds the placement eta (image-plane error / s)",
            "frames_compared": len(pairs)}
