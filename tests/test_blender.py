"""The GLB in Blender (issue 15): the real ``blender -b`` imports the demo's kind of GLB (a textured
reconstruction animated by the built-in motion, written by ``headcast export``) and reports what it read:
shape keys, the armature, the animation's frame range and the textured material."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from headcast.animate.builtin import builtin_motion
from headcast.cli import main
from headcast.core.camera import Intrinsics
from headcast.core.params import JOINT_NAMES, HeadParams
from headcast.io import anim as anim_io
from headcast.io.gltf import read_glb
from headcast.io.mesh import write_obj
from headcast.io.recon import write_params
from headcast.model.layer import HeadLayer
from headcast.render.images import save_png

# Runs inside Blender: import the GLB (after setting the scene rate to the animation's) and print what it read.
PROBE = r"""
import bpy, json, sys
args = sys.argv[sys.argv.index("--") + 1:]
path, fps = args[0], float(args[1])
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = round(fps), round(fps) / fps
bpy.ops.import_scene.gltf(filepath=path)
out = {"meshes": {}, "armatures": {}, "actions": {}}
for ob in bpy.data.objects:
    if ob.type == "MESH":
        keys = ob.data.shape_keys
        mats = []
        for mat in ob.data.materials:
            nodes = mat.node_tree.nodes
            bsdf = [n for n in nodes if n.type == "BSDF_PRINCIPLED"]
            mats.append({"name": mat.name, "images": [n.image.name for n in nodes if n.type == "TEX_IMAGE" and n.image],
                         "base_color_linked": bool(bsdf) and bsdf[0].inputs["Base Color"].is_linked})
        out["meshes"][ob.name] = {"shape_keys": [k.name for k in keys.key_blocks] if keys else [],
                                  "uv_layers": len(ob.data.uv_layers), "materials": mats,
                                  "armature": [m.object.name for m in ob.modifiers if m.type == "ARMATURE"]}
    if ob.type == "ARMATURE":
        out["armatures"][ob.name] = {b.name: b.parent.name if b.parent else None for b in ob.data.bones}
for a in bpy.data.actions:
    out["actions"][a.name] = list(a.frame_range)
print("HEADCAST_PROBE " + json.dumps(out))
"""


def _blender() -> str:
    exe = shutil.which("blender")
    if exe is None:
        pytest.skip("needs Blender (Debian's blender package; scripts/setup.sh installs it)")
    return exe


def _numpy_path(exe: str) -> list[str]:
    """Blender's glTF importer needs a numpy in Blender's own Python that still has ``np.bool``: Debian
    bookworm's python3-numpy (1.24) lacks it and the importer fails. numpy 2 has it again, so the test's
    own numpy (same Python minor version) goes first on Blender's path."""
    return [str(Path(np.__file__).parents[1])]


@pytest.fixture(scope="module")
def demo_glb(ict_model, headcast_home, tmp_path_factory):
    """A textured reconstruction folder (random identity, a gradient albedo) and the built-in motion's
    animation folder, exported by the CLI."""
    d = tmp_path_factory.mktemp("blender")
    m = ict_model
    rng = np.random.default_rng(4)
    p = HeadParams(np.clip(rng.normal(0, 1, m.n_shape), -2, 2), np.zeros(m.n_expr), np.zeros(15), 1.0,
                   np.array([0.0, 0.0, 0.5]), m.name)
    (d / "recon").mkdir()
    K = Intrinsics(fx=500, fy=500, cx=160, cy=120, width=320, height=240)
    write_params(d / "recon", p, K)
    K.to_json(d / "recon" / "intrinsics.json")
    write_obj(d / "recon" / "mesh_textured.obj", p.vertices(HeadLayer(m, dtype=torch.float64)), m.faces, m.uv,
              m.uv_faces)
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[..., 0] = np.arange(64)[None] * 4
    save_png(d / "recon" / "albedo.png", tex)
    motion = builtin_motion(m, fps=25.0)
    n = len(motion.times)
    (d / "anim").mkdir()
    anim_io.write_animation(d / "anim", anim_io.Animation(motion.times, motion.theta, motion.psi,
                                                          np.tile([1.0, 0.0, 0.0, 0.5], (n, 1)), np.ones(n, bool),
                                                          25.0, p.beta, m.name))
    assert main(["export", str(d / "recon"), "--anim", str(d / "anim"), "--out", str(d / "head.glb")]) == 0
    return d / "head.glb", n


def test_blender_imports_the_glb(demo_glb, ict_model):
    exe = _blender()
    glb, n = demo_glb
    doc, _ = read_glb(glb)
    fps = doc["animations"][0]["extras"]["fps"]
    assert fps == 25.0
    paths = _numpy_path(exe)
    expr = f"import sys; sys.path[:0] = {paths!r}; exec({PROBE!r})"
    run = subprocess.run([exe, "-b", "--factory-startup", "--python-expr", expr, "--", str(glb), str(fps)],
                         capture_output=True, text=True, timeout=600)
    line = next((x for x in run.stdout.splitlines() if x.startswith("HEADCAST_PROBE ")), None)
    assert line is not None, run.stdout[-2000:] + run.stderr[-2000:]
    got = json.loads(line[len("HEADCAST_PROBE "):])
    meshes = got["meshes"]
    assert list(meshes) == ["head"]
    head = meshes["head"]
    # one shape key per morph target, named as the model's expressions (Blender adds its Basis)
    assert head["shape_keys"] == ["Basis", *ict_model.meta["expression_names"]]
    # the armature with the 5 joints in FLAME's tree, skinning the mesh
    assert len(got["armatures"]) == 1 and head["armature"] == list(got["armatures"])
    bones = next(iter(got["armatures"].values()))
    assert bones == {"root": None, "neck": "root", "jaw": "neck", "left_eye": "neck", "right_eye": "neck"}
    assert list(bones) == list(JOINT_NAMES)
    # the animation: every frame of it, at the animation's rate (frames 0 .. n-1)
    assert got["actions"] and all(r == pytest.approx([0.0, n - 1], abs=1e-3) for r in got["actions"].values())
    # the textured material: the albedo image feeds the base colour, through the UV layer
    assert head["uv_layers"] == 1
    assert head["materials"][0] == {"name": "albedo", "images": ["albedo"], "base_color_linked": True}
    # the mouth interior's parts: their own materials, coloured by their vertex colours (no image)
    inner = head["materials"][1:]
    assert inner and all(m["name"].startswith("interior_") and not m["images"] and m["base_color_linked"]
                         for m in inner), inner
