"""Telepresence benchmark: stream size, bit rate and accuracy per profile on the real videos, and
end-to-end latency and sustained frame rate of the live sender/receiver over loopback.

For every video in ``../shared/samples/video/`` the animation stage tracks it (``headcast animate``
with the given reconstruction, cached in ``work/anim_<video>``); both profiles encode the
parameters into a signed file stream, which is decoded and compared with the unquantised
parameters (vertex error over all model vertices). Live: (1) the parameters of one video replayed
at its frame rate through the WebSocket sender to the receiver, which renders 512x512 frames into an
MP4; (2) the same with the sender tracking the video file as it plays (the real ``headcast send``);
(3) as (2) with the receiver in a process of its own, as ``headcast send`` and ``headcast receive`` run
(in one process the sender's tracking and the receiver's rendering also share one interpreter lock).
Latency is measured from the moment a frame is available at the sender (tracked, or released by
the replay clock) to the moment the receiver has decoded it and has rendered it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from pathlib import Path

from headcast.bench import machine, shared_samples, write_results
from headcast.model.registry import DEFAULT_MODEL, resolve_model
from headcast.stream import auth
from headcast.stream.files import animation_frames, encode_file, make_init, read_appearance
from headcast.stream.wire import PROFILES

logger = logging.getLogger(__name__)
VIDEOS = ("wojtek", "d0", "d6")


def animation_dirs(recon_dir: Path, videos_dir: Path, work: Path, names=VIDEOS,
                   max_frames: int | None = None) -> dict[str, Path]:
    from headcast.animate.pipeline import animate

    out = {}
    for name in names:
        d = work / f"anim_{name}"
        if not (d / "params.npz").is_file():
            logger.info(f"stream bench: tracking {name}.mp4 ...")
            animate(recon_dir, videos_dir / f"{name}.mp4", d, write_video=False, max_frames=max_frames)
        out[name] = d
    return out


RECEIVE_KW = {"idle_timeout": 5.0, "force": True}  # the bench's receivers: stop 5 s after the stream, replace the MP4


def _receive_here(out: Path, public: bytes, model, on_port) -> asyncio.Task:
    """A receiver task in this event loop; ``on_port(port)`` once it listens."""
    from headcast.stream import receiver

    return asyncio.create_task(receiver.receive(
        "127.0.0.1", 0, out, auth.Trust(public), model=model,
        ready=lambda s: on_port(next(iter(s.sockets)).getsockname()[1]), **RECEIVE_KW))


def _receive_process(out: Path, public: bytes, model_spec: str, ports, results) -> None:
    """A receiver in a process of its own (spawned): its port, then its ReceiveStats, go into the queues."""
    from headcast.core.threads import apply

    apply()

    async def main():
        return await _receive_here(out, public, resolve_model(model_spec), ports.put)

    results.put(asyncio.run(main()))


def _live(anim_dir: Path, recon_dir: Path, model, key, work: Path, video: Path | None, max_frames: int,
          own_process: bool = False, model_spec: str | None = None) -> dict:
    """One live run over loopback (module docstring); ``own_process``: the receiver in a process of its own,
    which loads ``model_spec`` (default: the model's name)."""
    from headcast.stream import metrics, sender, source

    frames, meta = animation_frames(anim_dir)
    meta["n_expr"] = frames[0].psi.size
    first = next(f for f in frames if f.face)
    info = make_init(meta, "compact", read_appearance(recon_dir), model, eta_ref=first.eta)
    out = work / f"live_{'replay' if video is None else 'tracked'}{'_2p' if own_process else ''}.mp4"
    public = auth.public_bytes(key)
    ctx = multiprocessing.get_context("spawn")
    ports, results = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_receive_process, args=(out, public, model_spec or model.name, ports, results), daemon=True) \
        if own_process else None

    async def main():
        if proc is not None:
            proc.start()
            rx, port = None, await asyncio.to_thread(ports.get, True, 300)
        else:
            listening = asyncio.get_running_loop().create_future()
            rx = _receive_here(out, public, model, listening.set_result)
            port = await listening
        if video is None:
            src = source.paced(iter(frames[:max_frames]), realtime=True)
        else:
            src, _ = source.primed(source.track_source(video, model, max_frames=max_frames)[0])
        t0 = time.perf_counter()
        sent = await sender.send(src, info, key, f"ws://127.0.0.1:{port}")
        wall = time.perf_counter() - t0
        got = await rx if rx is not None else await asyncio.to_thread(results.get, True, 300)
        return sent, got, wall

    try:
        sent, got, wall = asyncio.run(main())
    finally:
        if proc is not None and proc.pid is not None:  # started
            proc.join(30)
    rep = metrics.latency_report(sent, got)  # perf_counter is the system's monotonic clock: one across processes
    mode = "tracked from the video file" if video is not None else "parameter replay"
    rep.update(mode=mode + (", receiver in its own process" if own_process else ""),
               wall_seconds=wall, source_fps=meta["fps"], mp4=str(out))
    logger.info(f"stream bench: live ({rep['mode']}): {rep['frames_rendered']}/{rep['frames_sent']} frames rendered, "
                f"latency to render median {rep['latency_render_ms_median']:.1f} ms (p95 "
                f"{rep['latency_render_ms_p95']:.1f}), sustained {rep['sustained_fps']:.1f} fps")
    return rep


def run_stream_bench(recon_dir: str | Path, work: str | Path, videos_dir: str | Path | None = None,
                     model_spec: str = DEFAULT_MODEL, live: bool = True, live_frames: int = 250,
                     target_mm: float | None = None, key_interval: int | None = None) -> dict:
    """Run the benchmark; returns {'files': [...per video and profile], 'live': [...], 'machine': ...}."""
    from headcast.stream.files import DEFAULT_KEY_INTERVAL, DEFAULT_TARGET_MM

    recon_dir, work = Path(recon_dir), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    videos_dir = Path(videos_dir) if videos_dir else shared_samples() / "video"
    model = resolve_model(model_spec)
    key_path = work / "bench_ed25519.pem"
    if not key_path.is_file():
        auth.generate_key(key_path)
    key = auth.load_private_key(key_path)
    dirs = animation_dirs(recon_dir, videos_dir, work)
    rows = []
    for name, d in dirs.items():
        for profile in PROFILES:
            t0 = time.perf_counter()
            rep = encode_file(d, profile, work / f"{name}.{profile}.hcs", key_path, recon_dir=recon_dir,
                              target_mm=target_mm or DEFAULT_TARGET_MM,
                              key_interval=key_interval or DEFAULT_KEY_INTERVAL, model=model, force=True)
            rep.update(video=name, seconds=time.perf_counter() - t0)
            rows.append(rep)
            logger.info(f"stream bench: {name} {profile}: payload {rep['frame_payload_bytes_mean']:.1f} B/frame, "
                        f"all-in {rep['live_bytes_per_frame_all_in_no_png']:.1f} live / "
                        f"{rep['file_bytes_per_frame_all_in_no_png']:.1f} file (no PNG), "
                        f"{rep['kbit_s_live_all_in_no_png']:.2f} kbit/s, vertex error {rep['vertex_error_mm_mean']:.3f} mm")
    lives = []
    if live:
        longest = max(dirs, key=lambda n: len(animation_frames(dirs[n])[0]))
        lives.append(_live(dirs[longest], recon_dir, model, key, work, None, live_frames))
        for own_process in (False, True):
            lives.append(_live(dirs[longest], recon_dir, model, key, work, videos_dir / f"{longest}.mp4", live_frames,
                               own_process, model_spec))
        for r in lives:
            r["video"] = longest
    result = {"files": rows, "live": lives, "machine": machine(), "recon_dir": str(recon_dir)}
    write_results(work, "stream_bench", result)
    return result


ANCHORS = "MPEG-4 facial animation parameters < 5 kbit/s; the paper 436 B/frame (87 kbit/s at 25 fps); " \
          "LivePortrait-based codecs 22 kbit/s"


def summary_markdown(result: dict) -> str:
    """Lines for bench/RESULTS.md."""
    L = ["## Telepresence stream (`headcast bench stream`)", "",
         f"Machine: {result.get('machine', '?')}. Real videos tracked by the animation stage; protocol version 4: "
         "a live frame = frame byte + payload + 4-byte HMAC tag (the receiver counts the sequence; keyframes add "
         "it as a varint); in a file the tag is replaced by a length varint (the signed END covers every byte). "
         "All-in = every byte of the "
         "stream over its frames (live: HELLO + INIT + frames; file: INIT + frames + END), without the albedo PNG "
         "(sent once; its bytes are in the last column); WebSocket framing (2-6 B a message) not counted. Vertex "
         "error: mean over frames and all model vertices against the unquantised parameters (model frame; "
         "'placed' adds eta).", "",
         "| video | profile | frames | fps | payload B/frame | INIT B (PNG) | INIT+END share B/frame | all-in B/frame "
         "live / file | kbit/s live all-in | vertex error mm (mean / max) | placed mm |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["files"]:
        png = r["init_albedo_png_bytes"]
        share = (r["init_bytes"] - png + r["end_bytes"]) / max(r["frames"], 1)
        L.append(f"| {r['video']} | {r['profile']} | {r['frames']} | {r['fps']:g} | "
                 f"{r['frame_payload_bytes_mean']:.1f} | {r['init_bytes'] - png} (+{png}) | {share:.1f} | "
                 f"{r['live_bytes_per_frame_all_in_no_png']:.1f} / {r['file_bytes_per_frame_all_in_no_png']:.1f} | "
                 f"{r['kbit_s_live_all_in_no_png']:.2f} | "
                 f"{r['vertex_error_mm_mean']:.3f} / {r['vertex_error_mm_max']:.2f} | "
                 f"{r['placed_vertex_error_mm_mean']:.3f} |")
    comp = [r for r in result["files"] if r["profile"] == "compact"]
    if comp:
        tot = sum(r["frames"] for r in comp)
        live = sum(r["live_bytes_per_frame_all_in_no_png"] * r["frames"] for r in comp) / tot
        err = sum(r["vertex_error_mm_mean"] * r["frames"] for r in comp) / tot
        L += ["", f"Compact over all {tot} frames: {live:.1f} B/frame all-in live (target <= 24), mean vertex "
                  f"error {err:.3f} mm (target <= 0.12). Anchors: {ANCHORS}."]
    if result.get("live"):
        L += ["", "| live over 127.0.0.1 | video | frames rendered / sent | latency to decode ms (median / p95) | "
                  "latency to render ms (median / p95 / p95 after 1 s) | sustained fps | source fps |",
              "|---|---|---|---|---|---|---|"]
        for r in result["live"]:
            L.append(f"| {r['mode']} | {r.get('video', '')} | {r['frames_rendered']} / {r['frames_sent']} | "
                     f"{r['latency_decode_ms_median']:.1f} / {r['latency_decode_ms_p95']:.1f} | "
                     f"{r['latency_render_ms_median']:.1f} / {r['latency_render_ms_p95']:.1f} / "
                     f"{r['latency_render_ms_p95_steady']:.1f} | "
                     f"{r['sustained_fps']:.1f} | {r['source_fps']:g} |")
    return "\n".join(L) + "\n"
