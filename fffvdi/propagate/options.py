"""Knobs of the `propagate` method (config section `propagate`), checked when built."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fffvdi.errors import ConfigError
from fffvdi.propagate.carry import UNREVEALED
from fffvdi.propagate.pixels import COMBINE
from fffvdi.propagate.telea import SPATIAL

BLEND = ("none", "poisson")


@dataclass
class PropagateOptions:
    """Knobs of the propagate method (config section `propagate`)."""

    radius: int = 150  # frames searched each way for a pixel that shows the hole's content
    combine: str = "weighted"  # weighted (1/distance mix of both ways; chosen on real footage, README) | nearest
    #   (fewest frames away; mean on a tie)
    blend: str = "none"  # none | poisson (gradient-domain blend: no seams at the hole border or between sources)
    fb_check: bool = True  # end a trajectory where it lands on content that the estimated flow says is occluded
    telea_radius: int = 3  # OpenCV Telea radius for pre-filling frames for flow and for never-revealed pixels
    unrevealed: str = "frame"  # pixels no frame shows: frame (filled spatially anew in every frame) | carry (filled
    #   once, then carried along the flow: far less flicker, but a poor first fill is kept; README, propagate)
    spatial: str = "membrane"  # the spatial filler of never-revealed pixels: membrane (harmonic: smooth, the
    #   steadiest over time; README, propagate on real footage) | telea | ns (OpenCV Telea, Navier-Stokes)
    trust: Optional[float] = None  # completed flow is followed only where the flows around the hole (left, right, up,
    #   down) spread by at most this many pixels (fffvdi/propagate/trust.py); None: everywhere
    layers: Optional[float] = 1.0  # a hole that stays put gets its flow from its border's dominant motion only: border
    #   pixels off that layer's affine motion by more than this many px are left out (fffvdi/flow/layers.py); None: all
    source_erode: int = 0  # holes given grown by mask.dilate: other frames are also read in their outer N px, where an
    #   object's soft edge has faded (`source_hole`); inference sets it from mask.source_margin (README, propagate)
    agree: Optional[float] = 80.0  # a hole pixel whose past and future landings read colours more than this apart
    #   (mean |difference| over RGB, 0-255) followed a wrong flow one way or the other: the spatial fill takes it;
    #   None: off
    max_jump: Optional[float] = None  # end a trajectory where its flow changes by more than this + half its speed (px
    #   per frame) in one step: a resting point picked up by a passing object's flow (fffvdi/flow/trace.py); None: off

    def __post_init__(self) -> None:
        if self.unrevealed not in UNREVEALED:
            raise ConfigError(f"propagate.unrevealed={self.unrevealed!r} is unknown; use one of {', '.join(UNREVEALED)}")
        if self.spatial not in SPATIAL:
            raise ConfigError(f"propagate.spatial={self.spatial!r} is unknown; use one of {', '.join(SPATIAL)}")
        if self.blend not in BLEND:
            raise ConfigError(f"propagate.blend={self.blend!r} is unknown; use one of {', '.join(BLEND)}")
        if self.combine not in COMBINE:
            raise ConfigError(f"propagate.combine={self.combine!r} is unknown; use one of {', '.join(COMBINE)}")
        if self.max_jump is not None and self.max_jump < 0:
            raise ConfigError(f"propagate.max_jump={self.max_jump} must be >= 0 pixels per frame, or null (off)")
        if self.agree is not None and self.agree < 0:
            raise ConfigError(f"propagate.agree={self.agree} must be >= 0 grey levels, or null (off)")
        if self.layers is not None and self.layers < 0:
            raise ConfigError(f"propagate.layers={self.layers} must be >= 0 pixels per frame, or null (off)")
        if self.source_erode < 0:
            raise ConfigError(f"propagate source_erode={self.source_erode} must be >= 0 pixels")
        if self.radius < 1:
            raise ConfigError(f"propagate.radius={self.radius} must be at least 1 (frames searched each way)")
