"""Telepresence benchmark: stream size, bit rate and accuracy per profile on the real videos, and
end-to-end latency and sustained frame rate of the live sender/receiver over loopback.

For every video in ``../shared/samples/video/`` the animation stage tracks it (``headcast animate``
with the given reconstruction, cached in ``work/anim_<video>``); both profiles encode the
parameters into a signed file stream, which is decoded and compared with the unquantised
parameters (vertex error over all model vertices). Live: (1) the parameters of one video replayed
at its frame rate through the WebSocket sender to the receiver, which renders 512x512 frames into an
MP4; (2) the same with the sender tracking the video file as it plays (the real ``headcast send``).
Latency is measured from the moment a frame is available at the sender (tracked, or released by
the replay clock) to the moment the receiver has decoded it and has rendered it.
"""

from __future__ import annotations

import asyncio
import logging
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


def _live(anim_dir: Path, recon_dir: Path, model, key, work: Path, video: Path | None, max_frames: int) -> dict:
    from headcast.stream import metrics, receiver, sender, source

    frames, meta = animation_frames(anim_dir)
    meta["n_expr"] = frames[0].psi.size
    first = next(f for f in frames if f.face)
    info = make_init(meta, "compact", read_appearance(recon_dir), model, eta_ref=first.eta)
    out = work / ("live_tracked.mp4" if video is not None else "live_replay.mp4")

    async def main():
        servers = []
        ready = asyncio.Event()
        rx = asyncio.create_task(receiver.receive("127.0.0.1", 0, out, auth.Trust(auth.public_bytes(key)),
                                              idle_timeout=5.0, model=model, force=True,
                                              ready=lambda s: (servers.append(s), ready.set())))
        await ready.wait()
        port = next(iter(servers[0].sockets)).getsockname()[1]
        if video is None:
            src = source.paced(iter(frames[:max_frames]), realtime=True)
        else:
            src, _ = source.primed(source.track_source(video, model, max_frames=max_frames)[0])
        t0 = time.perf_counter()
        sent = await sender.send(src, info, key, f"ws://127.0.0.1:{port}")
        wall = time.perf_counter() - t0
        got = await rx
        return sent, got, wall

    sent, got, wall = asyncio.run(main())
    rep = metrics.latency_report(sent, got)
    rep.update(mode="tracked from the video file" if video is not None else "parameter replay",
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
        lives.append(_live(dirs[longest], recon_dir, model, key, work, videos_dir / f"{longest}.mp4", live_frames))
        lives[-1]["video"] = lives[0]["video"] = longest
    result = {"files": rows, "live": lives, "machine": machine(), "recon_dir": str(recon_dir)}
    write_results(work, "stream_bench", result)
    return result


ANCHORS = "MPEG-4 facial animation parameters < 5 kbit/s; the paper 436 B/frame (87 kbit/s at 25 fps); " \
          "LivePortrait-based codecs 22 kbit/s"


def summary_markdown(result: dict) -> str:
    """Lines for bench/RESULTS.md."""
    L = ["## Telepresence stream (`headcast bench stream`)", "",
         f"Machine: {result.get('machine', '?')}. Real videos tracked by the animation stage; protocol version 3: "
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
