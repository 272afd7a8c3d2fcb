"""Official-FLAME import: the safe unpickler, a FLAME-shaped fixture and the real FLAME side files.

The FLAME model itself is not available here; the fixture (tests/flame_fixture.py) has its
layout on FLAME's real mean head. Landmark files, masks and the template are the real ones from
../shared/models/flame-assets, read in place.
"""

import logging
import pickle

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import shared_path
from flame_fixture import flame_fixture_arrays, write_flame_fixture, write_malicious_files
from headcast.core.errors import HeadcastError
from headcast.model import HeadLayer, load_model, save_model
from headcast.model.flame import LICENCE, flame_version, import_flame
from headcast.model.flame_geometry import _raycast_front, derive_contour, embedded_points, geometric_masks
from headcast.model.flame_landmarks import deca_rows_to_yaw_rows, read_landmark_file
from headcast.model.safe_pickle import load_npy_safe, load_safe


@pytest.fixture(scope="module")
def assets():
    return shared_path("models", "flame-assets")


@pytest.fixture(scope="module")
def fixture_pkl(assets, tmp_path_factory):
    return write_flame_fixture(tmp_path_factory.mktemp("flame2020"), seed=0, version="2020")


@pytest.fixture(scope="module")
def model(fixture_pkl, assets):
    return import_flame(fixture_pkl, [assets / "landmark_embedding.npy"], assets / "FLAME_masks.pkl",
                        template_obj=assets / "head_template.obj")


@pytest.fixture(scope="module")
def reference(assets):
    return flame_fixture_arrays(assets / "head_template.obj", seed=0)


# the import -----------------------------------------------------------------------------------------
def test_fixture_is_laid_out_like_official_flame(fixture_pkl):
    data = fixture_pkl.read_bytes()
    for name in (b"chumpy.ch\nCh", b"scipy.sparse.csc\ncsc_matrix", b"numpy.core.multiarray\n_reconstruct"):
        assert name in data
    with pytest.raises(ModuleNotFoundError):  # what a plain unpickle does without chumpy
        pickle.loads(data, encoding="latin1")


def test_import_shapes_dtypes_and_values(model, reference):
    V, F = 5023, 9976
    assert model.v_template.shape == (V, 3) and model.faces.shape == (F, 3)
    assert model.shapedirs.shape == (V, 3, 300) and model.exprdirs.shape == (V, 3, 100)
    assert model.posedirs.shape == (V, 3, 36) and model.j_regressor.shape == (5, V)
    assert model.lbs_weights.shape == (V, 5) and model.parents.tolist() == [-1, 0, 1, 1, 1]
    for a in (model.v_template, model.shapedirs, model.exprdirs, model.posedirs, model.j_regressor, model.uv):
        assert a.dtype == np.float32
    assert model.faces.dtype == np.int32 and model.lmk_faces.dtype == np.int32
    np.testing.assert_array_equal(model.faces, reference["f"].astype(np.int32))
    np.testing.assert_allclose(model.shapedirs, reference["shapedirs"][:, :, :300], atol=1e-8)
    np.testing.assert_allclose(model.exprdirs, reference["shapedirs"][:, :, 300:], atol=1e-8)
    np.testing.assert_allclose(model.j_regressor, reference["J_regressor"].toarray(), atol=1e-7)
    np.testing.assert_allclose(model.lbs_weights, reference["weights"], atol=1e-7)
    assert model.meta["name"] == "flame2020" and model.meta["version"] == "2020"
    assert model.meta["licence"] == LICENCE and model.meta["units"] == "m" and "Bolkart" in model.meta["attribution"]
    assert model.has_dynamic_contour and model.dyn_lmk_faces.shape == (79, 17)


def _numpy_lbs(m, beta, psi, theta):
    """Independent FLAME forward in NumPy float64: vertices (V, 3), joints (5, 3)."""
    v = m.v_template.astype(np.float64) + m.shapedirs @ beta + m.exprdirs @ psi
    J = m.j_regressor.astype(np.float64) @ v
    R = Rotation.from_rotvec(theta.reshape(-1, 3)).as_matrix()
    v = v + m.posedirs.astype(np.float64) @ (R[1:] - np.eye(3)).ravel()
    G = np.zeros((5, 4, 4))
    for k, p in enumerate(m.parents):
        local = np.eye(4)
        local[:3, :3] = R[k]
        local[:3, 3] = J[k] - (J[p] if p >= 0 else 0)
        G[k] = local if p < 0 else G[p] @ local
    skin = G.copy()
    skin[:, :3, 3] -= np.einsum("kij,kj->ki", G[:, :3, :3], J)
    T = np.einsum("vk,kij->vij", m.lbs_weights.astype(np.float64), skin)
    return np.einsum("vij,vj->vi", T[:, :3, :3], v) + T[:, :3, 3], G[:, :3, 3]


def test_forward_equals_independent_numpy_lbs(model):
    rng = np.random.default_rng(3)
    layer = HeadLayer(model, dtype=torch.float64)
    for _ in range(2):
        beta, psi, theta = rng.normal(size=300), rng.normal(size=100), rng.normal(0, 0.3, 15)
        out = layer(*(torch.tensor(a)[None] for a in (beta, psi, theta)))
        verts, joints = _numpy_lbs(model, beta, psi, theta)
        np.testing.assert_allclose(out.vertices[0].numpy(), verts, atol=1e-6)
        np.testing.assert_allclose(out.joints[0].numpy(), joints, atol=1e-6)
        lmk = np.einsum("lk,lkc->lc", model.lmk_bary[17:], verts[model.faces[model.lmk_faces[17:]]])
        np.testing.assert_allclose(out.landmarks[0, 17:].numpy(), lmk, atol=1e-6)
    small = HeadLayer(model)  # float32, the fast path agrees
    z = small.zeros(2)
    z["theta"][:, 1] = 0.3
    np.testing.assert_allclose(small.landmarks(**z).numpy(), small(**z).landmarks.numpy(), atol=1e-6)


def test_save_load_round_trip(model, tmp_path):
    back = load_model(save_model(model, tmp_path / "flame2020.npz"))
    for k in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "j_regressor", "parents",
              "lbs_weights", "uv", "uv_faces", "lmk_faces", "lmk_bary", "dyn_lmk_faces", "dyn_lmk_bary"):
        np.testing.assert_array_equal(getattr(back, k), getattr(model, k), err_msg=k)
    assert sorted(back.masks) == sorted(model.masks)
    assert back.meta["sources"] == model.meta["sources"] and back.meta["licence"] == LICENCE


def test_python3_style_pickle_and_version_names(assets, tmp_path, reference):
    p = write_flame_fixture(tmp_path, version="2023_open", style="py3")
    assert b"_codecs\nencode" in p.read_bytes() and b"chumpy" not in p.read_bytes()
    m = import_flame(p, [assets / "flame_static_embedding.pkl"], template_obj=assets / "head_template.obj")
    assert m.meta["name"] == "flame2023_open" and m.meta["version"] == "2023_open"
    np.testing.assert_allclose(m.exprdirs, reference["shapedirs"][:, :, 300:], atol=1e-8)
    assert flame_version(tmp_path / "flame2023.pkl") == "2023"
    assert flame_version(tmp_path / "generic_model.pkl") == "2020"
    assert flame_version(tmp_path / "FLAME2020" / "FLAME_NEUTRAL.pkl") == "2020"
    assert flame_version(tmp_path / "my_head.pkl") is None


def test_side_files_found_next_to_the_pickle(assets, tmp_path, caplog):
    p = write_flame_fixture(tmp_path / "generic_model.pkl")
    for name in ("landmark_embedding.npy", "FLAME_masks.pkl", "head_template.obj"):
        (tmp_path / name).symlink_to(assets / name)
    with caplog.at_level(logging.INFO, logger="headcast.model"):
        m = import_flame(p)
    assert m.meta["sources"]["masks"] == "FLAME_masks.pkl" and m.has_dynamic_contour
    assert any("head_template.obj" in r.getMessage() for r in caplog.records)


# landmarks ------------------------------------------------------------------------------------------
def test_landmark_files_are_recognised_by_content(assets, tmp_path):
    kinds = {n: read_landmark_file(assets / n).kind for n in
             ("flame_static_embedding.pkl", "landmark_embedding.npy", "mediapipe_landmark_embedding.npz")}
    assert kinds == {"flame_static_embedding.pkl": "static", "landmark_embedding.npy": "deca",
                     "mediapipe_landmark_embedding.npz": "mediapipe"}
    renamed = tmp_path / "lmk.bin"
    renamed.write_bytes((assets / "landmark_embedding.npy").read_bytes())
    assert read_landmark_file(renamed).kind == "deca"
    with pytest.raises(HeadcastError, match="region masks, not landmarks"):
        read_landmark_file(assets / "FLAME_masks.pkl")
    with pytest.raises(HeadcastError, match="not a FLAME landmark file"):
        read_landmark_file(assets / "l_eyelid.npy")


def test_landmark_combinations(fixture_pkl, assets, model):
    obj = dict(template_obj=assets / "head_template.obj")
    static = import_flame(fixture_pkl, [assets / "flame_static_embedding.pkl"], **obj)
    assert not static.has_dynamic_contour
    assert "traced" in static.meta["sources"]["contour"]
    s = read_landmark_file(assets / "flame_static_embedding.pkl").arrays
    np.testing.assert_array_equal(static.lmk_faces[17:], s["faces"])
    both = import_flame(fixture_pkl, [assets / "landmark_embedding.npy", assets / "flame_static_embedding.pkl",
                                      assets / "mediapipe_landmark_embedding.npz"], **obj)
    np.testing.assert_array_equal(both.lmk_faces[17:], s["faces"])  # the static file wins for the 51
    np.testing.assert_array_equal(both.lmk_faces[:17], model.lmk_faces[:17])  # DECA's contour
    np.testing.assert_array_equal(both.dyn_lmk_faces, model.dyn_lmk_faces)
    assert any("mediapipe_landmark_embedding.npz ignored" in n for n in both.meta["notes"])
    with pytest.raises(HeadcastError, match="no static landmarks"):
        import_flame(fixture_pkl, [assets / "mediapipe_landmark_embedding.npz"], **obj)


def test_flame_pytorch_dynamic_embedding_layout(assets, tmp_path, fixture_pkl):
    deca = load_npy_safe(assets / "landmark_embedding.npy")
    p = tmp_path / "flame_dynamic_embedding.npy"
    np.save(p, np.array({"lmk_face_idx": deca["dynamic_lmk_faces_idx"],
                         "lmk_b_coords": deca["dynamic_lmk_bary_coords"]}, dtype=object), allow_pickle=True)
    lf = read_landmark_file(p)
    assert lf.kind == "dynamic"
    deca_rows = read_landmark_file(assets / "landmark_embedding.npy").arrays["dyn_faces"]
    np.testing.assert_array_equal(lf.arrays["dyn_faces"], deca_rows)
    m = import_flame(fixture_pkl, [assets / "flame_static_embedding.pkl", p],
                     template_obj=assets / "head_template.obj")
    assert m.has_dynamic_contour and m.meta["sources"]["contour"].endswith("(yaw 0)")
    np.testing.assert_array_equal(m.lmk_faces[:17], deca["dynamic_lmk_faces_idx"][0])  # DECA's row for 0


@pytest.mark.parametrize("source", ["landmark_embedding.npy", "flame_static_embedding.pkl"])
def test_landmarks_plausible_on_flame_mean_head(model, assets, fixture_pkl, source):
    m = model if source.endswith(".npy") else import_flame(
        fixture_pkl, [assets / source], template_obj=assets / "head_template.obj")
    L = m.landmark_vertices()
    v = m.v_template
    front = v[m.masks["face"]] if "face" in m.masks else v
    assert abs(L[30, 0]) < 0.002 and L[30, 2] > front[:, 2].max() - 0.005  # nose tip: the most forward point
    assert L[36, 0] < L[39, 0] < 0 < L[42, 0] < L[45, 0]  # eye corners: subject's right on -x
    assert 0.08 < L[45, 0] - L[36, 0] < 0.11  # outer eye corners of an adult, metres
    eyeballs = v[m.masks["eyes"]]
    assert abs(L[36:48, 1].mean() - eyeballs[:, 1].mean()) < 0.01
    assert L[8, 1] < L[57, 1] < L[51, 1] < L[33, 1] < L[30, 1]  # chin, lips, nose, downwards
    assert L[48, 0] < 0 < L[54, 0] and np.argmin(L[:17, 1]) == 8


def test_traced_contour_is_near_deca_contour(assets):
    from headcast.io.mesh import read_obj

    mesh = read_obj(assets / "head_template.obj")
    v, f = mesh.vertices, mesh.faces
    deca = read_landmark_file(assets / "landmark_embedding.npy").arrays
    ref = embedded_points(v, f, deca["contour_faces"], deca["contour_bary"])
    cf, cb = derive_contour(v, f, deca["faces"], deca["bary"])
    ours = embedded_points(v, f, cf, cb)
    d = np.linalg.norm(ours - ref, axis=1)
    assert d.mean() < 0.010 and d.max() < 0.016, d
    assert abs(ours[8, 0]) < 0.002 and np.abs(ours - ours[::-1] * [-1, 1, 1]).max() < 0.005  # symmetric


def _contour_hidden_and_outline(layer, faces, yaw_deg):
    """At head yaw ``yaw_deg``: how deep (m) each contour landmark lies behind the visible surface along
    the view (+z camera), and its 2D distance (m) to the face's outline (miss or a 1 cm depth drop)."""
    z = layer.zeros(1)
    z["theta"][0, 1] = np.deg2rad(yaw_deg)
    out = layer(**z)
    v, lmk = out.vertices[0].numpy(), out.landmarks[0, :17].numpy()
    front, _, _ = _raycast_front(v, faces, lmk[:, :2])
    grid = np.stack(np.meshgrid(np.linspace(-0.02, 0.02, 41), np.linspace(-0.02, 0.02, 41)), -1).reshape(-1, 2)
    outline = []
    for p in lmk:
        zz, _, _ = _raycast_front(v, faces, p[:2] + grid)
        off = ~np.isfinite(zz) | (zz < p[2] - 0.01)
        outline.append(np.linalg.norm(grid[off], axis=1).min() if off.any() else np.inf)
    return front - lmk[:, 2], np.array(outline)


def test_dynamic_contour_follows_the_turned_away_side(model, assets):
    layer = HeadLayer(model, dtype=torch.float64)
    for yaw, away in ((20, slice(10, 17)), (-20, slice(0, 7))):
        hidden, outline = _contour_hidden_and_outline(layer, model.faces, yaw)
        assert (hidden < 0.001).all(), (yaw, hidden)  # every contour point visible
        assert outline[away].max() < 0.004, (yaw, outline)  # the turned-away side on the outline
    # the row order DECA's code uses (row j for minus the Euler angle) hides the turned-away side
    raw = load_npy_safe(assets / "landmark_embedding.npy")
    layer.dyn_lmk_faces = torch.as_tensor(raw["dynamic_lmk_faces_idx"][np.r_[39 - np.arange(40), 40:79]])
    layer.dyn_lmk_bary = torch.as_tensor(raw["dynamic_lmk_bary_coords"][np.r_[39 - np.arange(40), 40:79]]).double()
    hidden, _ = _contour_hidden_and_outline(layer, model.faces, 20)
    assert (hidden[10:17] > 0.005).sum() >= 5


def test_deca_row_order():
    table = np.arange(79)
    ours = deca_rows_to_yaw_rows(table)
    assert ours[39] == 0 and ours[40] == 1 and ours[78] == 39 and ours[38] == 40 and ours[0] == 78


# masks and UVs --------------------------------------------------------------------------------------
def test_masks_from_flame_masks_pkl(model, assets):
    raw = load_safe(assets / "FLAME_masks.pkl")
    for k in ("face", "eyes", "lips", "scalp", "neck", "nose", "forehead", "left_ear", "boundary"):
        assert k in model.masks
    np.testing.assert_array_equal(model.masks["eyes"], np.union1d(raw["left_eyeball"], raw["right_eyeball"]))
    np.testing.assert_array_equal(model.masks["lips"], np.unique(raw["lips"]))


def test_geometric_masks_resemble_flame_masks(model, assets):
    raw = load_safe(assets / "FLAME_masks.pkl")
    ref = {"face": raw["face"], "eyes": np.r_[raw["left_eyeball"], raw["right_eyeball"]], "lips": raw["lips"],
           "scalp": raw["scalp"], "neck": raw["neck"]}
    ours = geometric_masks(model.v_template.astype(np.float64), model.faces, model.landmark_vertices(),
                           model.lbs_weights)
    floor = {"face": 0.85, "eyes": 0.99, "lips": 0.6, "scalp": 0.6, "neck": 0.55}
    for k, want in floor.items():
        a, b = set(ours[k].tolist()), set(ref[k].tolist())
        assert len(a & b) / len(a | b) > want, (k, len(a & b) / len(a | b))


def test_uvs_from_template_in_another_triangle_order(fixture_pkl, assets, model, tmp_path):
    from headcast.io.mesh import read_obj, write_obj

    mesh = read_obj(assets / "head_template.obj")
    order = np.random.default_rng(0).permutation(len(mesh.faces))
    shuffled = tmp_path / "head_template.obj"
    write_obj(shuffled, mesh.vertices, np.roll(mesh.faces[order], 1, axis=1), mesh.uv,
              np.roll(mesh.uv_faces[order], 1, axis=1))
    m = import_flame(fixture_pkl, [assets / "landmark_embedding.npy"], template_obj=shuffled)
    np.testing.assert_allclose(m.uv[m.uv_faces], model.uv[model.uv_faces], atol=1e-6)
    # as delivered (no template): no UVs, and only texturing is refused, saying how to add them
    bare = import_flame(fixture_pkl, [assets / "landmark_embedding.npy"])
    assert bare.uv is None and bare.meta["sources"]["uv"] is None
    with pytest.raises(HeadcastError, match="has none: add them with 'headcast model add-uv flame2020 head_template"):
        bare.require_uv("texture")
    from headcast.model.flame import add_uv

    added = add_uv(bare, shuffled)
    np.testing.assert_allclose(added.uv[added.uv_faces], model.uv[model.uv_faces], atol=1e-6)


# hostile and broken files -------------------------------------------------------------------------
@pytest.fixture()
def hostile(tmp_path):
    marker = tmp_path / "PWNED"
    return write_malicious_files(tmp_path, marker), marker


@pytest.mark.parametrize("name", ["builtins_eval", "torch_storage"])
def test_hostile_payloads_are_live(hostile, name):
    files, marker = hostile
    try:  # numpy + torch's loader runs the storage's code, then fails on the rest
        np.load(files[name], allow_pickle=True) if name == "torch_storage" else pickle.loads(files[name].read_bytes())
    except EOFError:
        pass
    assert marker.exists()  # a plain load runs the code: the payload is real


@pytest.mark.parametrize("name, asks", [("os_system", "posix.system"), ("builtins_eval", "builtins.eval"),
                                        ("unknown_class", "flame_fixture.Gadget"),
                                        ("inside_chumpy", "__builtin__.eval"), ("npy_payload", "builtins.eval"),
                                        ("torch_storage", "posix.system")])
def test_hostile_pickles_are_refused(hostile, assets, name, asks):
    files, marker = hostile
    refusal = f"refusing to load .*{name}.*: it asks for {asks}, which a FLAME file never contains"
    with pytest.raises(HeadcastError, match=refusal):
        if name.endswith(("payload", "storage")):
            read_landmark_file(files[name])
        else:
            import_flame(files[name], [assets / "landmark_embedding.npy"])
    assert not marker.exists()


def test_broken_files_give_one_line_errors(fixture_pkl, assets, tmp_path):
    data = fixture_pkl.read_bytes()
    cut = tmp_path / "generic_model.pkl"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(HeadcastError, match="truncated or not a pickle"):
        import_flame(cut, [assets / "landmark_embedding.npy"])
    npy = tmp_path / "landmark_embedding.npy"
    npy.write_bytes((assets / "landmark_embedding.npy").read_bytes()[:5000])
    with pytest.raises(HeadcastError, match="truncated or not a pickle"):
        read_landmark_file(npy)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(HeadcastError, match="truncated"):
        import_flame(empty, [assets / "landmark_embedding.npy"])
    with pytest.raises(HeadcastError, match="does not exist"):
        import_flame(tmp_path / "missing.pkl")


def test_wrong_shapes_are_named(assets, tmp_path):
    bad = write_flame_fixture(tmp_path / "generic_model.pkl",
                              overrides={"posedirs": np.zeros((5023, 3, 35))})
    with pytest.raises(HeadcastError, match=r"posedirs has shape \(5023, 3, 35\); expected \(5023, 3, 36\)"):
        import_flame(bad, [assets / "landmark_embedding.npy"])
    tree = write_flame_fixture(tmp_path / "g2.pkl",
                               overrides={"kintree_table": np.array([[-1, 0, 1, 2, 1], [0, 1, 2, 3, 4]])})
    with pytest.raises(HeadcastError, match="kinematic tree"):
        import_flame(tree, [assets / "landmark_embedding.npy"])
    missing = tmp_path / "g3.pkl"
    missing.write_bytes(pickle.dumps({"v_template": np.zeros((5023, 3))}, protocol=2))
    with pytest.raises(HeadcastError, match="lacks f, shapedirs"):
        import_flame(missing, [assets / "landmark_embedding.npy"])


def test_deca_file_reads_like_numpy_with_torch(assets):
    """Our torch-free parse of DECA's file equals numpy + torch's full unpickle (trusted file)."""
    ours = load_npy_safe(assets / "landmark_embedding.npy")
    theirs = np.load(assets / "landmark_embedding.npy", allow_pickle=True, encoding="latin1")[()]
    assert sorted(ours) == sorted(theirs)
    for k, v in theirs.items():
        v = v.numpy() if hasattr(v, "numpy") else v
        assert ours[k].dtype == v.dtype
        np.testing.assert_array_equal(ours[k], v)


def test_safe_unpickler_reads_sparse_and_python2_objects():
    import scipy.sparse as sp

    from headcast.model.safe_pickle import ChumpyStub, loads_safe, to_array

    dense = np.arange(12.0).reshape(3, 4) * (np.arange(12).reshape(3, 4) % 3 == 0)
    for make in (sp.csc_matrix, sp.csr_matrix, sp.coo_matrix):
        back = loads_safe(pickle.dumps({"m": make(dense)}, protocol=2))["m"]
        np.testing.assert_array_equal(to_array(back), dense)
    # protocol 0 as Python 2 wrote a new-style object: copy_reg._reconstructor(Ch, object, None)
    text = (b"ccopy_reg\n_reconstructor\np0\n(cchumpy.ch\nCh\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n"
            b"(dp5\nS'x'\np6\n(lp7\nF1.5\naF2.5\nasb.")
    ch = loads_safe(text)
    assert isinstance(ch, ChumpyStub) and ch.chumpy_class == "chumpy.ch.Ch"
    np.testing.assert_array_equal(to_array(ch), [1.5, 2.5])
    with pytest.raises(HeadcastError, match="asks for copy_reg._reconstructor|_reconstructor used"):
        loads_safe(text.replace(b"cchumpy.ch\nCh", b"cnumpy\nndarray"))
    with pytest.raises(HeadcastError, match="asks for collections.Counter"):
        loads_safe(pickle.dumps(__import__("collections").Counter("ab"), protocol=2))


# pickle bombs: tiny files that would take minutes or gigabytes ------------------------------------
def _nested(depth: int, width: int, leaf=1.0) -> list:
    x = [leaf]
    for _ in range(depth):
        x = [x] * width  # the same list referenced ``width`` times: pickled once, then by memo
    return x


def _bombs() -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes, what the refusal says)."""
    import struct

    import scipy.sparse as sp

    deep = b"\x80\x02" + b"(" * 5000 + b"l" * 5000 + b"."  # [[[...]]] 5000 deep
    # 50000 integer keys that all hash to 0 (k * (2**61 - 1)), written by hand: building such a
    # dict here would itself take minutes
    keys = [b"\x8a" + bytes([len(e)]) + e for e in (pickle.encode_long(k * (2 ** 61 - 1)) for k in range(1, 50_001))]
    colliding_dict = b"\x80\x02}(" + b"".join(k + b"K\x00" for k in keys) + b"u."
    colliding_set = b"\x80\x02c__builtin__\nset\n](" + b"".join(keys) + b"e\x85R."
    return {
        "shared_lists": (pickle.dumps({"v_template": _nested(40, 6)}, protocol=2), "more than .* array elements"),
        "shared_arrays": (pickle.dumps(_nested(30, 2, np.zeros(3)), protocol=2), "more than .* array elements"),
        "deep": (deep, "nested more than .* deep"),
        "colliding_keys": (colliding_dict, "keys that are not text"),
        "colliding_set": (colliding_set, "keys that are not text"),
        "memo_index": (b"\x80\x02N" + b"r" + struct.pack("<I", 2 ** 31 - 1) + b".", "not a FLAME model"),
        "sparse_shape": (pickle.dumps({"J_regressor": sp.coo_matrix((10 ** 6, 10 ** 6))}, protocol=2),
                         "sparse matrix is malformed"),
    }


@pytest.mark.parametrize("name", ["shared_lists", "shared_arrays", "deep", "colliding_keys", "colliding_set",
                                  "memo_index", "sparse_shape"])
def test_pickle_bombs_are_refused_quickly(tmp_path, assets, name):
    """Each hostile pickle (built here, at most a few MB) ends in one HeadcastError line naming the file
    within a couple of seconds and without large allocations."""
    import time
    import tracemalloc

    data, says = _bombs()[name]
    bomb = tmp_path / f"{name}.pkl"
    bomb.write_bytes(data)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(HeadcastError, match=says) as e:
            import_flame(bomb, [assets / "landmark_embedding.npy"], template_obj=assets / "head_template.obj")
        elapsed, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(bomb) in str(e.value) and "\n" not in str(e.value)
    assert elapsed < 2.0 and peak < 200e6, (len(data), elapsed, peak)


def test_pickle_object_count_is_bounded(monkeypatch):
    from headcast.model import safe_pickle
    from headcast.model.safe_pickle import loads_safe

    monkeypatch.setattr(safe_pickle, "MAX_OBJECTS", 10_000)
    assert len(loads_safe(pickle.dumps([[] for _ in range(4000)], protocol=2))) == 4000
    with pytest.raises(HeadcastError, match="more than 10000 pickled objects"):
        loads_safe(pickle.dumps([[] for _ in range(20_000)], protocol=2), "many.pkl")


def test_stride0_tensor_is_refused_before_it_is_copied(tmp_path):
    """A DECA-style .npy whose tensor views one stored number as 20000 x 20000 (3.2 GB as a copy)."""
    import time

    from flame_fixture import _npy_bytes

    t = torch.zeros(1, dtype=torch.float64).expand(20000, 20000)
    p = tmp_path / "landmark_embedding.npy"
    p.write_bytes(_npy_bytes({"lmk_face_idx": t, "lmk_b_coords": t}))
    assert p.stat().st_size < 4096
    t0 = time.perf_counter()
    with pytest.raises(HeadcastError, match=f"refusing to load {p}: it holds more than .* tensor elements"):
        read_landmark_file(p)
    assert time.perf_counter() - t0 < 2.0


def test_zip_bomb_landmark_file_is_refused(tmp_path):
    """A 3 MB .npz landmark file inflating to 3.4 GB: refused from its zip directory, at once."""
    import time

    from flame_fixture import write_zip_bomb

    bomb = tmp_path / "mediapipe_landmark_embedding.npz"
    write_zip_bomb(bomb, "lmk_face_idx.npy")
    t0 = time.perf_counter()
    with pytest.raises(HeadcastError, match=f"{bomb} holds .* MB of arrays uncompressed"):
        read_landmark_file(bomb)
    assert time.perf_counter() - t0 < 1.0
