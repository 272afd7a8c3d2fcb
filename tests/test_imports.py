"""What the reconstruct path loads of Open3D and MediaPipe (core.scene.open3d_native, preprocess.native), and
the face-region test that replaced Delaunay (preprocess.cloud.inside_hull)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from scipy.spatial import Delaunay

from headcast.preprocess.cloud import along_rays, inside_hull

CODE = """
import sys
import numpy as np
from headcast.core.scene import MeshScene
from headcast.preprocess.native import import_mediapipe

mp = import_mediapipe()
scene = MeshScene([(np.eye(3), np.array([[0, 1, 2]]))])
tri, bary, near, dist = scene.closest(np.array([[1.0, 1.0, 1.0]]))
print(sorted(m for m in ("matplotlib", "dash", "open3d", "open3d.visualization", "mediapipe.tasks") if m in sys.modules))
print(int(tri[0]), round(float(dist[0]), 6), mp.solutions.face_mesh.FaceMesh.__name__)
import mediapipe
import open3d
print(open3d.t.geometry.RaycastingScene is scene._o3d.t.geometry.RaycastingScene,
      mediapipe.solutions.face_mesh is mp.solutions.face_mesh, mediapipe.solutions.drawing_utils.__name__,
      mediapipe.tasks.__name__, mediapipe.__version__.count(".") >= 1)
"""


def test_only_the_used_parts_load_and_a_later_plain_import_is_whole():
    run = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "[]"  # no viewer (dash), no plotting (matplotlib), no task API
    assert lines[1] == f"0 {np.sqrt(3) - 1 / np.sqrt(3):.6f} FaceMesh"  # (1,1,1) to the plane x+y+z=1
    assert lines[2] == "True True mediapipe.python.solutions.drawing_utils mediapipe.tasks.python True"


OPEN3D_THREADS = """
import time
import numpy as np
from headcast.core import threads
from headcast.core.scene import MeshScene, open3d_native

rng = np.random.default_rng(0)
scene = MeshScene([(rng.normal(size=(3000, 3)), rng.integers(0, 3000, (6000, 3)))])
scene.closest(rng.normal(size=(100, 3)))
process, main = time.process_time(), time.thread_time()
for _ in range(3):
    scene.closest(rng.normal(size=(4000, 3)))
process, main = time.process_time() - process, time.thread_time() - main
print(open3d_native().utility.get_max_threads(), threads.apply().count, round(main / process, 2))
"""


def test_open3d_pool_follows_the_thread_plan():
    """Open3D's oneTBB pool ignores OMP_NUM_THREADS; the plan's count must reach it (one-thread batch
    workers ran their closest-point queries on two threads): with one thread, the queries' CPU time is
    the calling thread's."""
    import os

    for n in ("1", "2"):
        env = dict(os.environ, HEADCAST_THREADS=n, OMP_NUM_THREADS=n)
        run = subprocess.run([sys.executable, "-c", OPEN3D_THREADS], capture_output=True, text=True, timeout=300,
                             env=env)
        assert run.returncode == 0, run.stderr
        pool, plan, share = run.stdout.split()
        assert (pool, plan) == (n, n)
        if n == "1":
            assert float(share) > 0.9  # no second thread doing part of the work


def test_inside_hull_agrees_with_delaunay():
    rng = np.random.default_rng(3)
    for _ in range(5):
        hull = along_rays(rng.normal([0, 0, 0.5], 0.05, (68, 3)), 0.01)  # pairs along rays, as the face region's
        pts = rng.normal([0, 0, 0.5], 0.06, (20000, 3))
        expected = Delaunay(hull).find_simplex(pts) >= 0
        got = inside_hull(pts, hull)
        assert 1000 < got.sum() < 19000 and np.array_equal(got, expected)


RECONSTRUCT = """
import sys
from headcast.cli import main

code = main(["reconstruct", sys.argv[1], "--out", sys.argv[2], "--quiet"])
code = code or main(["-q", "texture", sys.argv[2], "--size", "256"])
import headcast.fit.sweep, headcast.fit.sweep_io, headcast.fit.detail  # the sweep's own modules
print(code, sorted(m for m in ("torch", "matplotlib", "dash") if m in sys.modules))
"""


def test_reconstruct_and_texture_do_not_import_torch(tmp_path, headcast_home):
    """``headcast reconstruct`` and ``headcast texture`` (a real frame, the whole commands) and the sweep's
    modules run without torch (the fit is NumPy: model.rig's closed form; the texture poses the head with
    model.skinning), nor the plotting and viewer libraries."""
    from conftest import shared_path

    prefix = shared_path("samples", "rgbd", "truedepth-mannequin") / "frame-050"
    run = subprocess.run([sys.executable, "-c", RECONSTRUCT, str(prefix), str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "0 []"
    assert (tmp_path / "r" / "fit_report.json").is_file()
    assert (tmp_path / "r" / "texture_report.json").is_file()


SYNTH = """
import sys
from headcast.cli import main

code = main(["-q", "synth", "--out", sys.argv[1], "--size", "160x120", "--seed", "2"])
print(code, "torch" in sys.modules)
"""


def test_synth_does_not_import_torch(tmp_path, headcast_home):
    """``headcast synth`` (and the demo's subject) poses the ground truth in NumPy (model.skinning, float64):
    torch's import was a tenth of the demo."""
    run = subprocess.run([sys.executable, "-c", SYNTH, str(tmp_path / "s")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "0 False"
    assert (tmp_path / "s" / "frame-000_gt.npz").is_file()
