"""The face point cloud: depth pixels inside the convex hull of the 3D landmarks, then outlier removal.

The paper keeps the points of the depth cloud that fall inside the convex hull of the 3D landmarks;
that hull stops at the brows. ``forehead=True`` adds the brow points moved up the face (and a copy
pushed back, so the forehead's curve stays inside) to take the forehead as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcast.core import threads
from headcast.core.camera import Intrinsics, depth_to_points
from headcast.core.errors import HeadcastError
from headcast.preprocess.ibug68 import BROWS, CHIN, LEFT_EYE_OUTER, RIGHT_EYE_OUTER

# The hull of the landmarks alone cuts through the face: cheeks and the nose bulge in front of the
# flat faces between contour, nose and mouth landmarks (on the TrueDepth mannequin it keeps 48-71% of
# the face). Extending every landmark 2 cm along its ray keeps the whole face and nothing behind it.
HULL_MARGIN = 0.02


@dataclass(frozen=True)
class FaceCloud:
    """points: (N, 3) float64 metres, camera frame; colors: (N, 3) uint8; pixels: (N, 2) int (u, v).
    n_depth: valid depth pixels in the frame; n_hull: of those inside the hull; N after outlier removal."""

    points: np.ndarray
    colors: np.ndarray
    pixels: np.ndarray
    n_depth: int
    n_hull: int

    @property
    def n_points(self) -> int:
        return len(self.points)


def face_axes(landmarks3d: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Up direction (chin to brows, orthogonal to the eye line), the normal towards the camera
    (unit (3,) vectors in the camera frame) and the chin-to-brow height in metres, from (68, 3) points."""
    lm = landmarks3d
    brow = np.nanmean(lm[BROWS], axis=0)
    across = lm[LEFT_EYE_OUTER] - lm[RIGHT_EYE_OUTER]   # subject's right -> left, i.e. image right
    up = brow - lm[CHIN]
    height = float(np.linalg.norm(up))
    across = across / np.linalg.norm(across)
    up = up - across * (up @ across)
    up = up / np.linalg.norm(up)
    normal = np.cross(across, up)
    if normal[2] > 0:  # the face looks towards the camera, i.e. along -z
        normal = -normal
    return up, normal, height


def along_rays(points: np.ndarray, margin: float) -> np.ndarray:
    """(2N, 3): each camera-frame point moved ``margin`` metres nearer and farther along its viewing ray."""
    z = points[:, 2:3]
    return np.concatenate([points * (1 - margin / z), points * (1 + margin / z)])


def hull_points(landmarks3d: np.ndarray, valid: np.ndarray, forehead: bool = False, margin: float = HULL_MARGIN,
                forehead_height: float = 0.4, forehead_depth: float = 0.25) -> np.ndarray:
    """(M, 3) points whose convex hull is the face region.

    margin: metres each landmark is also moved towards and away from the camera along its ray
    (0 = the paper's hull of the landmarks themselves). forehead: add the brow points moved up by
    ``forehead_height`` x chin-to-brow height, and a copy of those moved back (away from the
    camera along the face normal) by ``forehead_depth`` x that height.
    """
    pts = landmarks3d[valid]
    if forehead and valid[BROWS].sum() >= 3 and valid[[CHIN, LEFT_EYE_OUTER, RIGHT_EYE_OUTER]].all():
        up, normal, h = face_axes(np.where(valid[:, None], landmarks3d, np.nan))
        lifted = landmarks3d[BROWS][valid[BROWS]] + forehead_height * h * up
        pts = np.concatenate([pts, lifted, lifted - forehead_depth * h * normal])
    return along_rays(pts, margin) if margin > 0 else pts


def inside_hull(points: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """(N,) bool: which of (N, 3) points lie inside the convex hull of (M, 3) points.

    A point is inside when it is on the inner side of every facet plane (within 1e-12 m). Delaunay's
    ``find_simplex`` gave the same masks but took from 0.1 to 11 s per frame: the hull points come in
    pairs along camera rays, which makes sliver tetrahedra its walk crawls through.
    """
    from scipy.spatial import ConvexHull, QhullError  # here: importing the package costs animate ~0.5 s

    lo, hi = hull.min(axis=0), hull.max(axis=0)
    box = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1))
    try:
        planes = ConvexHull(hull).equations  # (F, 4): unit outward normal, offset; inside: n . p + d <= 0
    except QhullError:
        raise HeadcastError("the 3D landmarks are degenerate (flat or too few); no face region") from None
    q, inside = points[box], np.empty(len(box), bool)
    for i in range(0, len(q), 8192):  # chunks: a (points x facets) table of at most ~16 MB
        inside[i:i + 8192] = (q[i:i + 8192] @ planes[:, :3].T + planes[:, 3] <= 1e-12).all(axis=1)
    mask = np.zeros(len(points), bool)
    mask[box[inside]] = True
    return mask


def statistical_inliers(points: np.ndarray, neighbours: int = 20, std_ratio: float = 2.0) -> np.ndarray:
    """(N,) bool: points whose mean distance to their ``neighbours`` nearest is at most the average of
    that over all points plus ``std_ratio`` standard deviations (PCL's statistical outlier removal)."""
    from scipy.spatial import cKDTree

    if len(points) <= neighbours:
        return np.ones(len(points), bool)
    dist, _ = cKDTree(points).query(points, k=neighbours + 1, workers=threads.plan().count)  # each its own answer
    mean = dist[:, 1:].mean(axis=1)
    return mean <= mean.mean() + std_ratio * mean.std()


def face_point_cloud(depth: np.ndarray, color: np.ndarray, K: Intrinsics, landmarks3d: np.ndarray,
                     valid: np.ndarray, forehead: bool = False, margin: float = HULL_MARGIN, neighbours: int = 20,
                     std_ratio: float = 2.0, max_points: int | None = None, seed: int = 0) -> FaceCloud:
    """Face points of an (H, W) depth map in metres, with their colors from the (H, W, 3) image.

    Keeps the points inside the hull of the valid (68, 3) landmarks (see ``hull_points``), removes
    statistical outliers, then (``max_points``) draws a random subset with ``seed``.
    """
    pts, uv = depth_to_points(depth, K)
    n_depth = len(pts)
    hull = hull_points(landmarks3d, valid, forehead, margin)
    if len(hull) < 4:
        raise HeadcastError(f"only {len(hull)} landmarks have depth; at least 4 are needed for the face region")
    keep = inside_hull(pts, hull)
    pts, uv = pts[keep], uv[keep].astype(np.int64)
    n_hull = len(pts)
    keep = statistical_inliers(pts, neighbours, std_ratio)
    pts, uv = pts[keep], uv[keep]
    if max_points is not None and len(pts) > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(len(pts), max_points, replace=False))
        pts, uv = pts[pick], uv[pick]
    return FaceCloud(pts, color[uv[:, 1], uv[:, 0]].copy(), uv, n_depth, n_hull)
