"""Shared test paths. Tests that need ../shared skip with a reason when it is absent."""

from pathlib import Path

import pytest
from hypothesis import settings

# Property tests are seeded like everything else: the same examples on every run (no example database).
settings.register_profile("headcast", derandomize=True, database=None)
settings.load_profile("headcast")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path inside ../shared, or skip the test when it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the shared assets folder beside the repository), which is absent")
    return p


@pytest.fixture(scope="session")
def ict_model():
    """The default model converted once per session from ../shared's ICT-FaceKit copy."""
    from headcast.model.ict import build_ict_model

    return build_ict_model(src=shared_path("models", "ict-facekit"))


@pytest.fixture(scope="session")
def flame_model(tmp_path_factory):
    """A FLAME-format model imported from the fixture pickle (FLAME's topology, landmarks, masks and UV
    layout from ../shared's flame-assets)."""
    from flame_fixture import write_flame_fixture
    from headcast.model.flame import import_flame

    assets = shared_path("models", "flame-assets")
    pkl = write_flame_fixture(tmp_path_factory.mktemp("flame"), seed=0, version="2020")
    return import_flame(pkl, [assets / "landmark_embedding.npy"], assets / "FLAME_masks.pkl",
                        template_obj=assets / "head_template.obj")


@pytest.fixture(scope="session")
def headcast_home(ict_model, tmp_path_factory):
    """A HEADCAST_HOME holding models/ict.npz, set in the environment for the session (CLI subprocesses too)."""
    import os

    from headcast.model.head_model import save_model

    home = tmp_path_factory.mktemp("headcast-home")
    save_model(ict_model, home / "models" / "ict.npz")
    old = os.environ.get("HEADCAST_HOME")
    os.environ["HEADCAST_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("HEADCAST_HOME", None)
    else:
        os.environ["HEADCAST_HOME"] = old


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """One headless Chromium tab (tests/browser.py) shared by the browser tests (set-up installs chromium)."""
    from browser import chromium_exe, launch

    exe = chromium_exe()
    if exe is None:
        pytest.fail("needs Debian's chromium: run scripts/setup.sh (apt-get install chromium)")
    with launch(exe, tmp_path_factory.mktemp("chromium-profile")) as page:
        yield page
