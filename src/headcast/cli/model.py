"""``headcast model build-ict | import-flame | add-uv | info | list``: build, import and inspect head models."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from headcast.cli.parser import add_force

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    sub.add_parser("model", help="build, import and inspect head models", arguments=_actions)


def _actions(p: argparse.ArgumentParser) -> None:
    from headcast.model.registry import DEFAULT_MODEL

    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    b = msub.add_parser("build-ict", help=f"convert ICT-FaceKit Light (MIT) into the default model '{DEFAULT_MODEL}'")
    b.add_argument("--src", help="local copy of the ICT-FaceKit repository (folder holding FaceXModel/); "
                                 "without it the pinned commit is downloaded")
    b.add_argument("--out", help=f"output .npz (default: the model directory's {DEFAULT_MODEL}.npz)")
    b.add_argument("--if-missing", action="store_true", help="do nothing when the model exists (and is current; "
                                                             "a model built by another headcast version is rebuilt)")
    add_force(b, file=True)
    b.set_defaults(func=run_build_ict)
    f = msub.add_parser("import-flame", help="import an official FLAME pickle (2020, 2023, 2023 Open) safely")
    f.add_argument("pkl", help="generic_model.pkl, flame2023.pkl or flame2023_Open.pkl")
    f.add_argument("--landmarks", nargs="*", default=[], metavar="FILE",
                   help="flame_static_embedding.pkl, DECA landmark_embedding.npy, mediapipe_landmark_embedding.npz")
    f.add_argument("--masks", help="FLAME_masks.pkl (region masks); default: masks from geometry")
    f.add_argument("--template-obj", help="head_template.obj with FLAME's UV layout (default: none; only "
                                          "texturing needs it, 'model add-uv' adds it later)")
    f.add_argument("--name", help="model name (default from the file: flame2020, flame2023, flame2023_open)")
    f.add_argument("--out", help="output .npz (default: the model directory)")
    add_force(f, file=True)
    f.set_defaults(func=run_import_flame)
    u = msub.add_parser("add-uv", help="add texture coordinates (FLAME's head_template.obj) to an imported model")
    u.add_argument("model", help="model name or .npz path")
    u.add_argument("template_obj", help="head_template.obj with FLAME's UV layout (same vertices and triangles)")
    u.add_argument("--out", help="output .npz (default: replace the model's own file)")
    add_force(u, file=True)
    u.set_defaults(func=run_add_uv)
    i = msub.add_parser("info", help="print a model's sizes and metadata")
    i.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="name or .npz path (default: %(default)s)")
    i.set_defaults(func=run_info)
    ls = msub.add_parser("list", help="list the models in the model directory")
    ls.set_defaults(func=run_list)


def run_build_ict(a: argparse.Namespace) -> None:
    from headcast.io.outputs import check_output_file
    from headcast.model.head_model import load_model, save_model
    from headcast.model.ict import build_ict_model
    from headcast.model.registry import DEFAULT_MODEL, is_current_ict, model_path

    out = Path(a.out) if a.out else model_path(DEFAULT_MODEL)
    force = a.force
    if a.if_missing and out.is_file():
        if is_current_ict(load_model(out)):
            logger.info(f"headcast: default head model present: {out}")
            return
        logger.info(f"headcast: {out} was built by another headcast version; rebuilding it")
        force = True  # headcast's own model, out of date
    check_output_file(out, force=force)  # refuse before the build
    t0 = time.perf_counter()
    model = build_ict_model(src=Path(a.src) if a.src else None)
    save_model(model, out, force=force)
    logger.info(f"headcast: wrote {out} ({model.n_vertices} vertices, {model.n_shape} identity, "
                f"{model.n_expr} expression components) in {time.perf_counter() - t0:.1f} s")


def run_import_flame(a: argparse.Namespace) -> None:
    from headcast.io.outputs import check_output_file
    from headcast.model.flame import import_flame
    from headcast.model.head_model import save_model
    from headcast.model.registry import model_path

    inputs = [a.pkl, a.masks, a.template_obj, *a.landmarks]
    if a.out:
        check_output_file(a.out, force=a.force, inputs=inputs)  # refuse before the import
    model = import_flame(Path(a.pkl), landmark_paths=[Path(p) for p in a.landmarks],
                         masks_path=Path(a.masks) if a.masks else None,
                         template_obj=Path(a.template_obj) if a.template_obj else None,
                         name=a.name)
    out = Path(a.out) if a.out else model_path(model.name)
    check_output_file(out, force=a.force, inputs=inputs)
    save_model(model, out, force=a.force)
    logger.info(f"headcast: wrote {out} ({model.name}: {model.n_vertices} vertices, "
                f"{'dynamic' if model.has_dynamic_contour else 'static'} contour)")


def run_add_uv(a: argparse.Namespace) -> None:
    """Write the model with the OBJ's texture coordinates: to --out, or over its own file (its own
    file is headcast's output, so replacing it needs no --force)."""
    from headcast.io.outputs import check_output_file
    from headcast.model.flame import add_uv
    from headcast.model.head_model import save_model
    from headcast.model.registry import model_path, resolve_model

    src = Path(a.model) if Path(a.model).suffix == ".npz" else model_path(a.model)
    out = Path(a.out) if a.out else src
    force = a.force or out.resolve() == src.resolve()
    check_output_file(out, force=force, inputs=[a.template_obj])
    model = add_uv(resolve_model(a.model), Path(a.template_obj))
    save_model(model, out, force=force)
    logger.info(f"headcast: wrote {out} ({model.name}: {len(model.uv)} texture coordinates from "
                f"{Path(a.template_obj).name})")


def run_info(a: argparse.Namespace) -> None:
    """The model's sizes and metadata as JSON on stdout (the command's output)."""
    import json

    from headcast.model.registry import resolve_model

    m = resolve_model(a.model)
    info = {k: v for k, v in m.meta.items() if k not in ("attribution", "expression_names")}
    info.update(vertices=m.n_vertices, triangles=int(m.faces.shape[0]), n_shape=m.n_shape, n_expr=m.n_expr,
                joints=m.n_joints, dynamic_contour=m.has_dynamic_contour,
                texture_coordinates=int(len(m.uv)) if m.has_uv else None,
                masks={k: int(v.size) for k, v in m.masks.items()})
    sources = m.meta.get("sources") or {}
    if "masks" in sources:
        info["masks_from"] = sources["masks"]
    if "uv" in sources:
        info["uv_from"] = sources["uv"] or "none: add them with 'headcast model add-uv NAME head_template.obj'"
    print(json.dumps(info, indent=2))


def run_list(a: argparse.Namespace) -> None:
    """One line per model in the model directory on stdout: name, tab, path."""
    from headcast.core.paths import models_dir

    for p in sorted(models_dir().glob("*.npz")):
        print(f"{p.stem}\t{p}")
