"""What a fit returns: the parameters and one report per optimisation block (fit_report.json's ``blocks``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from headcast.core.params import HeadParams
from headcast.fit.priors import PriorWeights


@dataclass
class BlockReport:
    """One block: its name, the Levenberg-Marquardt steps it ran (at most its configured cap; fewer
    when the loss stopped falling), seconds, and the landmark RMSE (mm), L3D (mm^2) and loss after it."""

    name: str
    iterations: int
    seconds: float
    landmark_rmse_mm: float | None = None
    l3d_mm2: float | None = None
    loss: float | None = None


@dataclass
class FitResult:
    params: HeadParams
    blocks: list[BlockReport] = field(default_factory=list)
    priors: PriorWeights | None = None  # beside the point cloud (full method only)

    def report(self) -> dict:
        out = {"blocks": [asdict(b) for b in self.blocks]}
        if self.priors is not None:
            out["priors"] = self.priors.report()
        return out
