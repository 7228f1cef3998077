"""nn.Module faces of the ops: ``forward`` only calls them."""
from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import Tensor, nn

from .config import SasPConfig
from .geometry import ImageSizes
from .ops import SasPOutput, dtoc, similarity_as_points


class SasP(nn.Module):
    """Similarity as Points: similarity map -> refined point prompts and labels.

    Example:
        >>> sasp = SasP(READ_7B)
        >>> points, labels = sasp(sim, image_hw)   # [M, K, 2] float32, [M, K] int64
    """

    def __init__(self, cfg: Optional[SasPConfig] = None, grid_hw: Optional[Tuple[int, int]] = None, **overrides):
        super().__init__()
        cfg = cfg or SasPConfig()
        self.cfg = cfg.replace(**overrides) if overrides else cfg
        self.grid_hw = grid_hw

    def forward(
        self, sim: Tensor, image_hw: ImageSizes, return_discrete: bool = False
    ) -> Union[Tuple[Tensor, Tensor], SasPOutput]:
        """sim [M, N_p], image_hw [M, 2] -> refined points [M, K, 2], labels [M, K]
        (with ``return_discrete=True``, the whole ``SasPOutput``: also the discrete points
        [M, K, 2] int64)."""
        out = similarity_as_points(sim, image_hw, self.cfg, self.grid_hw)
        return out if return_discrete else (out.refined, out.labels)

    def extra_repr(self) -> str:
        return repr(self.cfg)


class DtoC(nn.Module):
    """Discrete to Continuous: integer points -> refined points, differentiable in ``sim``."""

    def __init__(self, cfg: Optional[SasPConfig] = None, grid_hw: Optional[Tuple[int, int]] = None, **overrides):
        super().__init__()
        cfg = cfg or SasPConfig()
        self.cfg = cfg.replace(**overrides) if overrides else cfg
        self.grid_hw = grid_hw

    def forward(self, sim: Tensor, image_hw: ImageSizes, points: Tensor) -> Tensor:
        """sim [M, N_p], image_hw [M, 2], points [M, K, 2] -> refined points [M, K, 2]."""
        return dtoc(sim, image_hw, points, self.cfg, self.grid_hw)

    def extra_repr(self) -> str:
        return repr(self.cfg)
