"""The preview's frames from the landmark pass (SharedFrames): the same frames as a second decode, in
every case: all held, a drop before the reader starts, and the decoder waiting for the reader."""

import threading

import numpy as np
import pytest

from conftest import shared_path
from headcast.animate.video import SharedFrames, VideoWriter, read_frames, video_info


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 20-frame 64x48 MP4 and its decoded frames."""
    path = tmp_path_factory.mktemp("clip") / "a.mp4"
    y, x = np.mgrid[0:48, 0:64]
    base = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)
    with VideoWriter(path, 25.0, crf=0) as w:
        for i in range(20):
            w.append_data(np.roll(base, 3 * i, axis=1))
    return path, list(read_frames(path))


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_all_frames_held(clip):
    path, frames = clip
    share = SharedFrames(path, video_info(path))
    for f in frames:
        share.put(f)
    assert _same(list(share.frames()), frames)


def test_a_drop_before_the_reader_starts_is_decoded_again(clip):
    path, frames = clip
    share = SharedFrames(path, video_info(path), budget=3 * frames[0].nbytes)
    for f in frames:
        share.put(f)
    assert len(share._kept) == 3  # frames 0..2 held, 3.. dropped
    assert _same(list(share.frames()), frames)


def test_the_decoder_waits_for_the_reader(clip):
    path, frames = clip
    share = SharedFrames(path, video_info(path), budget=2 * frames[0].nbytes)
    share.put(frames[0])
    reader = share.frames()
    got = [next(reader)]  # the reader has started: from now on put() waits instead of dropping
    most = []

    def produce():
        for f in frames[1:]:
            share.put(f)
            most.append(len(share._kept))

    t = threading.Thread(target=produce)
    t.start()
    while len(got) < len(frames):
        while not share._kept and t.is_alive():  # frame i is read only once it was put (as in animate)
            t.join(0.01)
        got.append(next(reader))
    t.join()
    assert _same(got, frames) and max(most) <= 2


def test_close_ends_a_wait(clip):
    path, frames = clip
    share = SharedFrames(path, video_info(path), budget=frames[0].nbytes)
    share.put(frames[0])
    next(share.frames())
    share.put(frames[1])  # held: the one before was read
    t = threading.Thread(target=share.put, args=(frames[2],))
    t.start()
    t.join(0.3)
    assert t.is_alive()  # waits for the reader
    share.close()
    t.join(5)
    assert not t.is_alive()


@pytest.mark.parametrize("name", ["clip", "wojtek.mp4"])
def test_frames_decoded_in_the_process_are_the_ffmpeg_commands(clip, name):
    """read_frames (OpenCV's FFmpeg in this process) gives the rgb24 frames the ffmpeg command pipes, bit for
    bit: the clip (yuv420p) and the first 30 frames of a shared video (yuv444p, another conversion path)."""
    import imageio_ffmpeg

    path = clip[0] if name == "clip" else shared_path("samples", "video", name)
    info = video_info(path)
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-frames:v", "30"])
    w, h = next(gen)["size"]
    want = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    got = list(read_frames(path, 30, info))
    assert (info.width, info.height) == (w, h) and len(want) > 0 and _same(got, want)
