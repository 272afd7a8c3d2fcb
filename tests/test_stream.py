"""Telepresence stream: wire format, both profiles, file round trip, authenticity, robustness, fuzzing."""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headcast.core.errors import HeadcastError
from headcast.stream import auth
from headcast.stream import codec as K
from headcast.stream import coder as C
from headcast.stream.introduction import half, init_body, parse_init_body, wire_steps
from headcast.stream.session import ReceiverSession, SenderSession
from headcast.stream.wire import (
    COMPACT,
    ETA_PAPER,
    F_LEN,
    F_NEXT,
    F_SEQ,
    FRAME,
    MAX_FRAME_BODY,
    PAPER,
    InitInfo,
    ProtocolError,
    pack_frame,
    pack_message,
    parse_message,
    split_stream,
    varint,
)

E = 12  # expression components of the synthetic streams


def synthetic_frames(n: int, seed: int = 0, e: int = E) -> list[K.ParamFrame]:
    """A smooth, seeded random walk of pose, expression and placement (radians, [0, 1], px/m and px)."""
    rng = np.random.default_rng(seed)
    th = np.cumsum(rng.normal(0, 0.004, (n, 15)), 0)
    th[:, 3:6] = 0  # neck at rest, as the tracker leaves it
    ps = np.clip(0.3 + np.cumsum(rng.normal(0, 0.02, (n, e)), 0), 0, 1)
    eta = np.c_[2500 * np.exp(np.cumsum(rng.normal(0, 0.002, n))), 256 + np.cumsum(rng.normal(0, 0.5, (n, 2)), 0)]
    return [K.ParamFrame(i, i / 25.0, th[i], ps[i], eta[i], True) for i in range(n)]


def make_info(profile: int = COMPACT, e: int = E, key_interval: int = 10, sender: str = "alice") -> InitInfo:
    n_pose = 15 if profile == COMPACT else 6
    info = InitInfo("test", 8, e, np.linspace(-1, 1, 8), np.arange(27) / 27.0, None, None, 25.0, profile, n_pose,
                    ETA_PAPER, key_interval, None, sender)
    if profile == COMPACT:
        info.steps = wire_steps(np.r_[np.full(15, 0.001), np.full(e, 0.005), 0.0005, 0.05, 0.05])
    return info


@pytest.fixture(scope="module")
def key():
    return auth.Ed25519PrivateKey.generate()


def live_pair(info, key, trust=None):
    tx = SenderSession(info, key)
    rx = ReceiverSession(trust or auth.Trust(auth.public_bytes(key)))
    assert rx.handle(tx.init(rx.hello())) == []
    return tx, rx


# -- entropy coder -----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-3000, 3000), st.integers(0, C.N_SCALES - 1)), min_size=1, max_size=80))
def test_coder_round_trip(pairs):
    enc = C.Encoder()
    for r, s in pairs:
        enc.put_residual(r, s)
    enc.put_eg(12345)
    dec = C.Decoder(enc.finish())
    assert [dec.get_residual(s) for _, s in pairs] == [r for r, _ in pairs]
    assert dec.get_eg() == 12345


def _code_all(x: np.ndarray) -> bytes:
    state, enc = K.initial_state(x.shape[1]), C.Encoder()
    for t in range(1, len(x)):
        _, state = K.code_delta(x[t], x[t - 1], state, enc=enc)
    return enc.finish()


def test_adaptive_coder_near_entropy_and_round_trip():
    """Laplace residuals whose scale jumps half-way: the adaptive states follow it, so the coded size is
    within 6 % (+ 4 bytes) of the ideal code length under the true distributions; a series that keeps
    returning to exactly zero (the second context) decodes back exactly."""
    rng = np.random.default_rng(1)
    b = np.r_[np.full(1000, 0.5), np.full(1000, 4.0)]
    p = np.exp(-1 / b[:, None])  # two-sided geometric: the difference of two geometric variables
    r = rng.geometric(1 - p, (2000, 3)) - rng.geometric(1 - p, (2000, 3))
    x = np.cumsum(r, axis=0)
    r, p = r[1:], p[1:]
    ideal = (-np.log2((1 - p) / (1 + p)) - np.abs(r) * np.log2(p)).sum()
    assert 8 * len(_code_all(x)) < 1.06 * ideal + 32
    x[::7, 0] = 0
    data = _code_all(x)
    state, dec, q = K.initial_state(3), C.Decoder(data), x[0]
    for t in range(1, len(x)):
        q, state = K.code_delta(q, q, state, dec=dec)
        assert np.array_equal(q, x[t])


# -- wire format -------------------------------------------------------------------------------
def test_init_round_trip_and_paper_sizes():
    info = make_info(PAPER)
    info.albedo_png = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (4).to_bytes(4, "big") * 2 + b"rest"
    body = init_body(info) + bytes(64)
    got, _, _ = parse_init_body(body)
    assert got.model == "test" and got.sender == "alice" and got.n_pose == 6 and got.albedo_png == info.albedo_png
    # beta and lambda travel as float16: exactly the rounded values, within 2^-11 relative
    assert np.array_equal(got.beta, half(info.beta)) and np.array_equal(got.lam, half(info.lam))
    np.testing.assert_allclose(got.beta, info.beta, rtol=2.0 ** -11)
    with pytest.raises(HeadcastError, match="16-bit float"):
        init_body(replace(info, beta=np.r_[info.beta[:-1], 7e4]))
    # the paper's per-frame payload: (6 + P + 3) float32; FLAME's P = 100 gives 436 bytes
    flame = InitInfo("flame", 300, 100, np.zeros(300), np.zeros(27), np.zeros(50), profile=PAPER, n_pose=6)
    x = K.to_vector(np.zeros(15), np.zeros(100), np.array([1.0, 2, 3]), flame)
    assert len(K.paper_encode(x)) == 436
    assert 4 * (flame.n_shape + flame.rho.size + flame.lam.size) == 1508


def test_step_codes_are_powers_of_two_within_a_sixteenth_octave():
    """One byte a step: the nearest power of 2^(1/8); the sender's steps are exactly what the INIT carries."""
    steps = np.geomspace(2.0 ** -20, 50, 400)
    w = wire_steps(steps)
    assert np.all(np.abs(np.log2(w / steps)) <= 1 / 16 + 1e-12)
    assert np.array_equal(wire_steps(w), w)
    info = make_info()
    got, _, _ = parse_init_body(init_body(info) + bytes(64))
    assert np.array_equal(got.steps, info.steps)


def test_caps_reject_oversized_fields():
    with pytest.raises(ProtocolError, match="cap"):
        parse_message(pack_frame(0, 0, False, b"", True)[:2] + varint(MAX_FRAME_BODY + 1) + bytes(MAX_FRAME_BODY + 1))
    with pytest.raises(ProtocolError, match="cap"):
        parse_message(pack_frame(0, 0, False, bytes(MAX_FRAME_BODY + 1), False) + bytes(4))
    info = make_info()
    body = bytearray(init_body(info) + bytes(64))
    body[0] = 200  # model id length over its 64-byte cap
    with pytest.raises(ProtocolError, match="cap"):
        parse_init_body(bytes(body))
    big = make_info()
    big.albedo_png = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (100000).to_bytes(4, "big") * 2
    with pytest.raises(ProtocolError, match="side cap"):
        parse_init_body(init_body(big) + bytes(64))


# -- profiles ----------------------------------------------------------------------------------
def test_compact_round_trip_within_half_a_step(key):
    info = make_info(key_interval=10)
    frames = synthetic_frames(60)
    tx, rx = live_pair(info, key)
    out = []
    for f in frames:
        out += rx.handle(tx.frame(f))
    assert [d.seq for d in out] == list(range(60))
    for f, d in zip(frames, out):
        x = K.to_vector(f.theta, f.psi, f.eta, info)
        xd = K.to_vector(d.theta, d.psi, d.eta, info)
        assert np.all(np.abs(x - xd) <= 0.5 * info.steps * (1 + 1e-6) + 1e-9)
    assert sum(d.key for d in out) == 6


def test_paper_profile_is_raw_float32(key):
    info = make_info(PAPER)
    tx, rx = live_pair(info, key)
    f = synthetic_frames(3)[2]
    msg = tx.frame(f)
    # frame byte + the full seq 2 as a one-byte varint (every paper frame is a keyframe) + payload + tag
    assert len(msg) == 1 + 1 + 4 * (6 + E + 3) + 4
    d = rx.handle(msg)[0]
    np.testing.assert_allclose(d.theta[[0, 1, 2, 6, 7, 8]], f.theta[[0, 1, 2, 6, 7, 8]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d.psi, f.psi, rtol=1e-6, atol=1e-7)
    assert np.all(d.theta[[3, 4, 5, 9, 10, 11, 12, 13, 14]] == 0)  # the paper does not send neck or eyes


def test_lean_frames_sizes_replays_and_splices(key):
    """Version 2 frames: the frame after the previous one is its payload + 5 bytes live (frame byte,
    4-byte tag): the receiver counts, and the counted sequence is in the MAC input, so a replayed frame
    fails the MAC; a keyframe's full sequence number replayed is a duplicate; a jump sends the low byte."""
    info = make_info(key_interval=200)
    tx = SenderSession(info, key, ordered=True)
    rx = ReceiverSession(auth.Trust(auth.public_bytes(key)))
    rx.handle(tx.init(rx.hello()))
    frames = synthetic_frames(300, seed=4)
    msgs = [tx.frame(f) for f in frames]
    assert msgs[0][0] & F_SEQ and not msgs[1][0] & F_SEQ
    got = [d for m in msgs[:260] for d in rx.handle(m)]
    assert [d.seq for d in got] == list(range(260)) and got[7].t == 7 / info.fps
    with pytest.raises(ProtocolError, match="already received"):
        rx.handle(msgs[200])  # a keyframe: its full sequence number
    with pytest.raises(ProtocolError, match="bad MAC"):
        rx.handle(msgs[259])  # counted as seq 260
    assert [d.seq for m in msgs[260:] for d in rx.handle(m)] == list(range(260, 300))
    for m in msgs[1:200]:
        assert len(m) == len(parse_message(m).body) + 5 and m[0] & F_NEXT
    # a jump of a few frames: the sequence's low byte, extended by the receiver
    gap = SenderSession(info, key, ordered=True)
    grx = ReceiverSession(auth.Trust(auth.public_bytes(key)))
    grx.handle(gap.init(grx.hello()))
    jumped = [gap.frame(f) for f in (frames[0], frames[3], frames[4])]
    for m in jumped:
        grx.handle(m)  # authenticated (the extended seq is in the MAC input); 3 waits for its reference 2
    assert not jumped[1][0] & (F_NEXT | F_SEQ) and grx.window.seen == {0, 3, 4}
    # in a file the same frame carries its length and no tag (the signed END covers it)
    ftx = SenderSession(info, key, file_mode=True)
    ftx.init()
    fm = [ftx.frame(f) for f in frames[:3]]
    assert fm[0][0] & F_LEN and all(len(m) == len(parse_message(m).body) + 2 for m in fm[1:])
    frx = ReceiverSession(auth.Trust(auth.public_bytes(key)), file_mode=True)
    frx.handle(SenderSession(info, key, file_mode=True).init())
    for r, m in ((frx, msgs[1]), (rx, fm[1])):
        with pytest.raises(ProtocolError, match="a file frame sent live, or a live frame in a file"):
            r.handle(m)


def test_version_1_streams_get_a_one_line_error(tmp_path, key):
    """A version 1, 2 or 3 INIT or file: one line naming the version, in the library and from the CLI (exit 2)."""
    import subprocess
    import sys

    v1 = b"HC\x01\x02\x00" + (10).to_bytes(4, "little") + bytes(10)
    with pytest.raises(ProtocolError, match="version 1 headcast stream.*version 4"):
        parse_message(v1)
    for old in (2, 3):
        with pytest.raises(ProtocolError, match=f"version {old} headcast stream.*version 4"):
            parse_message(b"HC" + bytes([old]) + v1[3:])
    path = tmp_path / "old.hcs"
    path.write_bytes(v1)
    r = subprocess.run([sys.executable, "-m", "headcast.cli", "decode", str(path), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "version 1" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_expression_steps_bound_the_worst_vertex(ict_model):
    """The expression cap: rounding one coefficient moves no vertex by more than peak_mm (to the one-byte
    grid's 2^(1/16)), however small the component's RMS sensitivity."""
    m = ict_model
    peaks = K.expression_peaks(m, m.n_expr)
    S = np.r_[np.full(15, 0.1), np.full(m.n_expr, 1e-6), 1.0, 1e-3, 1e-3]
    steps = K.quantisation_steps(S, 0.4, 15, 3, expr_peak=peaks, peak_mm=0.2)
    worst = 0.5 * steps[15:15 + m.n_expr] * peaks
    assert np.all(worst <= 0.2e-3 * 2 ** (1 / 16) + 1e-12) and worst.max() > 0.15e-3


def test_steps_meet_vertex_error_on_ict(ict_model):
    """Steps from the model's sensitivities keep the mean vertex error under 0.2 mm (real model)."""
    m = ict_model
    frames = synthetic_frames(40, seed=3, e=m.n_expr)
    beta = np.random.default_rng(0).normal(0, 0.5, m.n_shape)
    meta = {"beta": beta, "model": "ict", "eta_kind": ETA_PAPER, "fps": 25.0, "n_expr": m.n_expr}
    from headcast.stream.files import accuracy, decode_bytes, encode_frames, make_init

    info = make_init(meta, "compact", model=m, eta_ref=frames[0].eta)
    k = auth.Ed25519PrivateKey.generate()
    data, sizes = encode_frames(frames, info, k)
    dec = decode_bytes(data, auth.Trust(auth.public_bytes(k)))
    acc = accuracy(m, frames, dec["frames"], info)
    assert acc["frames_compared"] == 40
    assert acc["vertex_error_mm_mean"] < 0.2
    assert acc["placed_vertex_error_mm_mean"] < 0.3
    assert np.mean(sizes) < 9 + 8 + 8 + 60


# -- file round trip ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def anim_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("anim")
    fr = synthetic_frames(30, seed=5)
    face = np.ones(30, bool)
    face[12:15] = False
    np.savez(d / "params.npz", time=np.arange(30) / 25.0, theta=np.array([f.theta for f in fr]),
             psi=np.array([f.psi for f in fr]), eta=np.array([f.eta for f in fr]), face_found=face,
             beta=np.zeros(8), model=np.str_("test"), fps=np.float64(25.0))
    return d


def test_file_round_trip_and_tamper(anim_dir, tmp_path, key, monkeypatch):
    from headcast.stream import files

    frames, meta = files.animation_frames(anim_dir)
    meta["n_expr"] = E
    info = make_info(key_interval=10)
    data, _ = files.encode_frames(frames, info, key)
    (tmp_path / "s.hcs").write_bytes(data)
    (tmp_path / "k.pub").write_text(f"headcast-ed25519 {auth.public_bytes(key).hex()}\n")
    rep = files.decode_file(tmp_path / "s.hcs", tmp_path / "out", trust_key=tmp_path / "k.pub")
    assert rep["frames"] == 30 and rep["ratio_raw_256_total"] > 450
    with np.load(tmp_path / "out" / "params.npz") as z:
        assert z["theta"].shape == (30, 15) and not z["face_found"][12:15].any()
        np.testing.assert_allclose(z["psi"][13], z["psi"][11])  # held through the face gap
    assert json.loads((tmp_path / "out" / "init.json").read_text())["profile"] == "compact"
    # one flipped bit anywhere: rejected, and nothing written
    for pos in (20, len(data) // 2, len(data) - 70, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        (tmp_path / "bad.hcs").write_bytes(bytes(bad))
        with pytest.raises(ProtocolError):
            files.decode_file(tmp_path / "bad.hcs", tmp_path / "bad_out", trust_key=tmp_path / "k.pub")
        assert not (tmp_path / "bad_out").exists()
    # a truncated file (no END) and another signer are rejected
    (tmp_path / "cut.hcs").write_bytes(data[:-50])
    with pytest.raises(ProtocolError):
        files.decode_file(tmp_path / "cut.hcs", tmp_path / "cut_out", trust_key=tmp_path / "k.pub")
    other, _ = files.encode_frames(frames, info, auth.Ed25519PrivateKey.generate())
    (tmp_path / "other.hcs").write_bytes(other)
    with pytest.raises(ProtocolError, match="not the trusted key"):
        files.decode_file(tmp_path / "other.hcs", tmp_path / "o_out", trust_key=tmp_path / "k.pub")


def test_trust_on_first_use(tmp_path, key):
    store = tmp_path / "known.json"
    t = auth.Trust(store=store)
    info = make_info(sender="bob")
    live_pair(info, key, trust=t)
    assert json.loads(store.read_text()) == {"bob": auth.public_bytes(key).hex()}
    live_pair(info, key, trust=auth.Trust(store=store))  # same key again: accepted
    with pytest.raises(ProtocolError, match="trusted on first use"):
        live_pair(info, auth.Ed25519PrivateKey.generate(), trust=auth.Trust(store=store))


def test_trust_on_first_use_in_a_receiver_trusts_the_first_sender_only(tmp_path, key):
    """accept_new=False (``receive`` without --accept-new): the first name is stored, a second name is
    refused and not stored; with accept_new it is stored. A store that is not a map of keys is one line."""
    store = tmp_path / "known.json"
    live_pair(make_info(sender="bob"), key, trust=auth.Trust(store=store, accept_new=False))
    other = auth.Ed25519PrivateKey.generate()
    with pytest.raises(ProtocolError, match="new sender 'eve'.*--accept-new"):
        live_pair(make_info(sender="eve"), other, trust=auth.Trust(store=store, accept_new=False))
    assert list(json.loads(store.read_text())) == ["bob"]
    live_pair(make_info(sender="eve"), other, trust=auth.Trust(store=store, accept_new=True))
    assert list(json.loads(store.read_text())) == ["bob", "eve"]
    store.write_text("[1, 2]")
    with pytest.raises(HeadcastError, match="not a map of sender names"):
        auth.Trust(store=store).known()


def test_keygen_files(tmp_path):
    p, pub = auth.generate_key(tmp_path / "id.pem")
    k = auth.load_private_key(p)
    assert auth.load_public_key(pub) == auth.public_bytes(k)
    assert (p.stat().st_mode & 0o777) == 0o600 and (pub.stat().st_mode & 0o777) == 0o644


def test_keygen_modes_and_both_or_neither(tmp_path):
    """--force over a world-readable private key leaves it 0600 (public 0644); a public path that is a
    folder is refused with one line and leaves no private key; nothing staged is left behind."""
    from headcast.cli import main

    p = tmp_path / "id.pem"
    p.write_text("old private\n")
    p.chmod(0o644)
    (tmp_path / "id.pem.pub").write_text("old public\n")
    (tmp_path / "id.pem.pub").chmod(0o600)
    with pytest.raises(HeadcastError, match="exists"):
        auth.generate_key(p)
    assert p.read_text() == "old private\n"
    old_umask = os.umask(0o000)  # modes must not depend on the umask
    try:
        assert main(["keygen", "--out", str(p), "--force"]) == 0
    finally:
        os.umask(old_umask)
    assert (p.stat().st_mode & 0o777) == 0o600 and ((tmp_path / "id.pem.pub").stat().st_mode & 0o777) == 0o644
    assert auth.load_public_key(tmp_path / "id.pem.pub") == auth.public_bytes(auth.load_private_key(p))
    q = tmp_path / "other.pem"
    (tmp_path / "other.pem.pub").mkdir()
    with pytest.raises(HeadcastError, match="other.pem.pub is a folder"):
        auth.generate_key(q, overwrite=True)
    assert not q.exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["id.pem", "id.pem.pub", "other.pem.pub"]


def test_keygen_failure_restores_the_old_pair(tmp_path, monkeypatch):
    """If putting the second key file in place fails, the first is put back: the pair stays the old one."""
    p, pub = auth.generate_key(tmp_path / "id.pem")
    before = (p.read_bytes(), pub.read_bytes())
    real_link = os.link  # how headcast.io.outputs puts a staged file in place

    def failing(src, dst):
        if str(dst).endswith(".pub"):
            raise OSError(28, "No space left on device", str(dst))
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", failing)
    with pytest.raises(HeadcastError, match=f"cannot write {tmp_path}: no space left on device"):
        auth.generate_key(p, overwrite=True)
    monkeypatch.undo()
    assert (p.read_bytes(), pub.read_bytes()) == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["id.pem", "id.pem.pub"]


# -- live session robustness -------------------------------------------------------------------
def test_loss_duplicates_reordering_and_replay(key):
    info = make_info(key_interval=8)
    frames = synthetic_frames(40, seed=2)
    tx, rx = live_pair(info, key)
    msgs = [tx.frame(f) for f in frames]
    order = list(range(40))
    order[5], order[6] = order[6], order[5]  # reordered pair
    del order[order.index(20)]               # lost: 21..23 wait, the keyframe at 24 resumes
    rng = random.Random(0)
    out, reasons = [], []
    for i in order:
        for _ in range(2 if rng.random() < 0.2 else 1):  # duplicates
            try:
                out += rx.handle(msgs[i])
            except ProtocolError as e:
                reasons.append(str(e))
    seqs = [d.seq for d in out]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert set(seqs) == set(range(20)) | set(range(24, 40))
    assert reasons and all("already received" in r for r in reasons)
    with pytest.raises(ProtocolError, match="already received"):
        rx.handle(msgs[30])  # replay


def test_forged_tampered_and_cross_session_frames_rejected(key):
    info = make_info()
    tx, rx = live_pair(info, key)
    rx.handle(tx.frame(synthetic_frames(1)[0]))
    m = bytearray(tx.frame(synthetic_frames(2)[1]))
    m[20] ^= 1
    with pytest.raises(ProtocolError, match="bad MAC"):
        rx.handle(bytes(m))
    # a recorded INIT replayed to a new HELLO is refused; frames of another session fail the MAC
    old_init = tx.init(rx.hello())
    rx2 = ReceiverSession(auth.Trust(auth.public_bytes(key)))
    rx2.hello()
    with pytest.raises(ProtocolError, match="HELLO"):
        rx2.handle(old_init)
    tx3, rx3 = live_pair(info, key)
    with pytest.raises(ProtocolError, match="bad MAC"):
        rx3.handle(tx.frame(synthetic_frames(3)[2]))
    # an INIT signed by an untrusted key
    evil = SenderSession(info, auth.Ed25519PrivateKey.generate())
    with pytest.raises(ProtocolError, match="not the trusted key"):
        rx3.handle(evil.init(rx3.hello()))
    # an INIT whose signature does not match its fields
    good = bytearray(SenderSession(info, key).init(rx3.hello()))
    good[30] ^= 4
    with pytest.raises(ProtocolError):
        rx3.handle(bytes(good))


# -- fuzzing -----------------------------------------------------------------------------------
def _feed(rx, data):
    try:
        rx.handle(data)
    except ProtocolError:
        pass


FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    rx = ReceiverSession(auth.Trust(bytes(32)))
    rx.hello()
    _feed(rx, data)
    _feed(rx, b"HC\x01" + data)
    _feed(rx, b"HC\x01\x03\x00" + len(data).to_bytes(4, "little") + data)


def _damage(data, src: bytes, others: list[bytes]) -> bytes:
    """``src`` bit-flipped, truncated or spliced (a piece of another stream, or of itself, put in)."""
    how = data.draw(st.sampled_from(["flip", "cut", "splice"]))
    if how == "flip":
        m = bytearray(src)
        for b in data.draw(st.lists(st.integers(0, 8 * len(m) - 1), min_size=1, max_size=4)):
            m[b // 8] ^= 1 << (b % 8)
        return bytes(m)
    if how == "cut":
        return src[:data.draw(st.integers(0, len(src)))]
    other = data.draw(st.sampled_from([src, *others]))
    a, d = sorted(data.draw(st.lists(st.integers(0, len(src)), min_size=2, max_size=2)))
    b, c = sorted(data.draw(st.lists(st.integers(0, len(other)), min_size=2, max_size=2)))
    return src[:a] + other[b:c] + src[d:]


def _same_frame(d, ref) -> None:
    assert d.face == ref.face and d.key == ref.key and d.t == ref.t
    for k in ("theta", "psi", "eta"):
        np.testing.assert_array_equal(getattr(d, k), getattr(ref, k))


# file streams: all or nothing
def _file_stream(key, seed: int):
    """A signed file stream (with a frame without a face): (bytes, end offset of each frame's message by
    seq, the frames decode_bytes gives by seq)."""
    from headcast.stream.files import decode_bytes

    frames = synthetic_frames(14, seed=seed)
    frames[7].face = False
    tx = SenderSession(make_info(key_interval=5), key, file_mode=True)
    parts, ends = [tx.init()], {}
    for f in frames:
        parts.append(tx.frame(f))
        ends[f.seq] = sum(map(len, parts))
    data = b"".join(parts + [tx.end()])
    ref = {d.seq: d for d in decode_bytes(data, auth.Trust(auth.public_bytes(key)))["frames"]}
    assert sorted(ref) == list(range(14))
    return data, ends, ref


@pytest.fixture(scope="module")
def file_streams(key):
    return [_file_stream(key, 9), _file_stream(key, 10)]


def _stream_decode(data: bytes, key) -> tuple[list, bool]:
    """A streaming consumer of a file stream that carries on past rejected messages: (frames, END verified)."""
    rx = ReceiverSession(auth.Trust(auth.public_bytes(key)), file_mode=True)
    out = []
    try:
        for m in split_stream(data):
            try:
                out += rx.handle(m.raw)
            except ProtocolError:
                pass
    except ProtocolError:  # the stream cannot be split further
        pass
    return out, rx.ended


@FUZZ
@given(st.data())
def test_fuzz_damaged_file_stream_decodes_nothing_after_the_damage(file_streams, key, data):
    """A bit-flipped, truncated or spliced file stream: no decoded frame comes from the damage point on
    (not even for a consumer that goes on after errors), the END never verifies, decode_bytes refuses it."""
    from headcast.stream.files import decode_bytes

    i = data.draw(st.integers(0, len(file_streams) - 1))
    src, ends, ref = file_streams[i]
    bad = _damage(data, src, [s for j, (s, _, _) in enumerate(file_streams) if j != i])
    if bad == src:
        return
    whole = next(((s, r) for s, _, r in file_streams if bad.startswith(s)), None)
    if whole is not None:  # a complete signed stream, then more: that stream decodes as sent, the rest is refused
        frames, ended = _stream_decode(bad, key)
        assert ended and len(frames) == len(whole[1])
        for d in frames:
            _same_frame(d, whole[1][d.seq])
        with pytest.raises(ProtocolError):
            decode_bytes(bad, auth.Trust(auth.public_bytes(key)))
        return
    at = next((k for k, (x, y) in enumerate(zip(bad, src)) if x != y), min(len(bad), len(src)))
    frames, ended = _stream_decode(bad, key)
    assert not ended
    for d in frames:
        assert ends[d.seq] <= at, (d.seq, ends[d.seq], at)
        _same_frame(d, ref[d.seq])
    with pytest.raises(ProtocolError):
        decode_bytes(bad, auth.Trust(auth.public_bytes(key)))


def test_file_stream_after_a_rejected_message_is_refused(file_streams, key):
    """Junk inserted between two messages of a signed file (rejected, not hashed) no longer lets the END
    verify: the receiver refuses everything after it."""
    src, ends, _ = file_streams[0]
    junk = pack_message(FRAME, 0, b"\0" * 16) + bytes(8)
    bad = src[:ends[3]] + junk + src[ends[3]:]
    frames, ended = _stream_decode(bad, key)
    assert frames == [] and not ended


# live: a damaged message yields nothing, and nothing that depends on it decodes
@FUZZ
@given(st.data())
def test_fuzz_damaged_live_message(key, data):
    """One FRAME of a live session bit-flipped, truncated or spliced: it is rejected, the frames that
    depend on it (up to the next keyframe) do not decode, and every decoded frame is the sender's."""
    frames = synthetic_frames(16, seed=11)
    frames[9].face = False
    info = make_info(key_interval=5)
    clean_tx, clean_rx = live_pair(info, key)
    other = [clean_tx.frame(f) for f in frames]  # the same frames in another session
    ref = {d.seq: d for m in other for d in clean_rx.handle(m)}
    tx, rx = live_pair(info, key)
    msgs = [tx.frame(f) for f in frames]
    k = data.draw(st.integers(0, len(msgs) - 1))
    bad = _damage(data, msgs[k], other)
    out = []
    for j, m in enumerate(msgs):
        try:
            got = rx.handle(bad if j == k else m)
        except ProtocolError:
            continue
        assert j != k or bad == msgs[k] or got == [], "a damaged message decoded"
        out += got
    for d in out:
        _same_frame(d, ref[d.seq])
    if bad != msgs[k]:
        resync = min((s for s, d in ref.items() if d.key and s > k), default=len(msgs))
        assert not {d.seq for d in out} & set(range(k, resync)), (k, resync, [d.seq for d in out])


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_fuzz_payload_decoders(payload, key_frame):
    """The compact decoders on arbitrary payloads (as if the MAC had been forged): a result of the
    right size or a ProtocolError, quickly."""
    info = make_info()
    try:
        if key_frame:
            q, s = K.compact_decode_key(payload, info)
            assert q.shape == (info.n_components,) and s.shape == (2, info.n_components)
        else:
            n = info.n_components
            state = np.arange(2 * n).reshape(2, n) ** 3  # states over every scale index, both contexts
            prev = np.arange(n) % 3 - 1                  # previous values zero and non-zero
            q, s = K.compact_decode_delta(payload, prev, state)
            assert q.shape == (n,) and s.shape == (2, n)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(min_size=0, max_size=3000))
def test_fuzz_init_parser(body):
    try:
        info, _, _ = parse_init_body(body)
        assert info.n_shape <= 1024 and info.n_expr <= 1024
    except ProtocolError:
        pass


# -- live over loopback ------------------------------------------------------------------------
def test_live_loopback_with_a_dropped_connection(ict_model, headcast_home, tmp_path, key, caplog):
    """Sender -> receiver over ws://127.0.0.1 with the connection cut mid-stream: the sender reconnects,
    the receiver resumes at a keyframe, renders an MP4; a forged sender is rejected."""
    import asyncio
    import time

    import imageio.v3 as iio

    from headcast.stream import metrics, receiver, sender, source

    m = ict_model
    frames = synthetic_frames(40, seed=4, e=m.n_expr)
    info = InitInfo("ict", m.n_shape, m.n_expr, np.zeros(m.n_shape), None, None, None, 25.0, COMPACT, 15,
                    ETA_PAPER, 10, K.steps_for(m, np.zeros(m.n_shape), 15, ETA_PAPER, frames[0].eta), "carol")
    out = tmp_path / "received.mp4"

    async def main():
        servers = []
        ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        rx_task = asyncio.create_task(receiver.receive(
            "127.0.0.1", 0, out, auth.Trust(auth.public_bytes(key)), idle_timeout=1.5, max_lag=0,
            size=128, model=m, ready=lambda s: (servers.append(s), ready.set())))
        await ready.wait()
        port = next(iter(servers[0].sockets)).getsockname()[1]

        def stream():
            for f, t in source.paced(iter(frames), realtime=True):
                if f.seq == 15:  # cut the link from the receiver's side
                    for c in list(servers[0].connections):
                        loop.call_soon_threadsafe(c.transport.abort)
                    time.sleep(0.3)
                yield f, t

        sent = await sender.send(stream(), info, key, f"ws://127.0.0.1:{port}")
        # a sender with an untrusted key is refused at its INIT
        evil = await sender.send(source.paced(iter(frames[:3]), False), info, auth.Ed25519PrivateKey.generate(),
                                 f"ws://127.0.0.1:{port}")
        got = await rx_task
        return sent, evil, got

    with caplog.at_level(logging.INFO, logger="headcast.stream"):
        sent, evil, got = asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert sent.sessions >= 2, lines
    assert any(line.startswith("receive: session ") for line in lines)
    assert any(line.startswith("receive: sender disconnected") for line in lines)
    rendered = sorted(got.rendered_at)
    assert len(rendered) >= 15 and rendered[-1] == 39, (rendered, got)
    assert any("not the trusted key" in r for r in got.reasons) and got.refused_peers == 1
    assert evil.sessions == 1 and got.sessions == sent.sessions  # the evil INIT never opened a session
    rep = metrics.latency_report(sent, got)
    assert rep["latency_decode_ms_median"] < 1000  # rendering every frame (max_lag 0) may lag on a busy machine
    video = np.stack(list(iio.imiter(out, plugin="FFMPEG")))
    assert video.shape[1:] == (128, 128, 3) and len(video) == rendered[-1] - rendered[0] + 1  # gaps held
    assert video[len(video) // 2].std() > 5  # a rendered head, not a blank frame
    iio.imwrite(tmp_path / "mid.png", video[len(video) // 2])


def test_live_session_ends_at_its_first_bad_tag(ict_model, headcast_home, key, caplog):
    """A frame with a wrong tag inside the trusted sender's own connection (what an on-path forger can
    do) ends that session: the receiver closes the connection and decodes nothing after it, so a forger
    gets one 2^-32 try per session (docs/protocol.md)."""
    import asyncio
    import contextlib

    from headcast.stream import receiver
    from headcast.stream.transport import websockets_api

    _, connect, _ = websockets_api()
    m = ict_model
    frames = synthetic_frames(6, seed=5, e=m.n_expr)
    info = InitInfo("ict", m.n_shape, m.n_expr, np.zeros(m.n_shape), None, None, None, 25.0, COMPACT, 15,
                    ETA_PAPER, 4, K.steps_for(m, np.zeros(m.n_shape), 15, ETA_PAPER, frames[0].eta), "dave")

    async def main():
        servers, ready = [], asyncio.Event()
        rx_task = asyncio.create_task(receiver.receive(
            "127.0.0.1", 0, None, auth.Trust(auth.public_bytes(key)), idle_timeout=1.0, render=False, model=m,
            ready=lambda s: (servers.append(s), ready.set())))
        await ready.wait()
        port = next(iter(servers[0].sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            tx = SenderSession(info, key, ordered=True)
            await ws.send(tx.init(await ws.recv()))
            msgs = [tx.frame(f) for f in frames]
            msgs[2] = msgs[2][:-1] + bytes([msgs[2][-1] ^ 1])
            with contextlib.suppress(Exception):
                for msg in msgs:
                    await ws.send(msg)
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(ws.wait_closed(), 10)
        return await rx_task, ws.close_code

    with caplog.at_level(logging.INFO, logger="headcast.stream"):
        got, code = asyncio.run(main())
    assert code is not None and got.frames == 2, got  # the keyframe at seq 4 would decode in an open session
    assert any("session closed after a bad MAC" in r.getMessage() for r in caplog.records)
