"""The objective registry: short names in configs map to an `ObjectiveEntry` (config model, objective class)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field

from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives import flow_map, gm
from mgm_studies.objectives.base import Objective, ObjectiveOutput, VelocityHeads
from mgm_studies.objectives.itvm import InitialTerminalVelocityMatching, ITVMConfig
from mgm_studies.objectives.mgm import MGMConfig, MidpointGenerativeModel
from mgm_studies.objectives.pfmm import PFMMConfig, ProgressiveFlowMapMatching
from mgm_studies.objectives.si import SIConfig, StochasticInterpolantObjective
from mgm_studies.objectives.time_laws import TimeLawConfig, sample_times
from mgm_studies.sampling import VelocityFn


@dataclass(frozen=True)
class ObjectiveEntry:
    """A registered objective: its config section (`objective:` in a run config) and the class it builds."""

    config: type
    objective: type[Objective]

    @property
    def image_defaults(self) -> dict[str, Any]:
        """Config defaults that image data changes (the config section's `image_defaults`, e.g. a value range)."""
        return dict(getattr(self.config, "image_defaults", {}))


# name -> entry; a new objective is one module and one line here.
OBJECTIVES: dict[str, ObjectiveEntry] = {
    "si": ObjectiveEntry(SIConfig, StochasticInterpolantObjective),
    "lsd": ObjectiveEntry(flow_map.LSDConfig, flow_map.LagrangianSelfDistillation),
    "esd": ObjectiveEntry(flow_map.ESDConfig, flow_map.EulerianSelfDistillation),
    "psd_midpoint": ObjectiveEntry(flow_map.PSDMidpointConfig, flow_map.ProgressiveSelfDistillationMidpoint),
    "psd_uniform": ObjectiveEntry(flow_map.PSDUniformConfig, flow_map.ProgressiveSelfDistillationUniform),
    "lmd": ObjectiveEntry(flow_map.LMDConfig, flow_map.LagrangianMapDistillation),
    "emd": ObjectiveEntry(flow_map.EMDConfig, flow_map.EulerianMapDistillation),
    "itvm": ObjectiveEntry(ITVMConfig, InitialTerminalVelocityMatching),
    "pfmm": ObjectiveEntry(PFMMConfig, ProgressiveFlowMapMatching),
    "mgm": ObjectiveEntry(MGMConfig, MidpointGenerativeModel),
    "gm_flow": ObjectiveEntry(gm.GMFlowConfig, gm.FlowGeneratorMatching),
    "gm_jump": ObjectiveEntry(gm.GMJumpConfig, gm.JumpGeneratorMatching),
    "gm_superposition": ObjectiveEntry(gm.GMSuperpositionConfig, gm.SuperpositionGeneratorMatching),
}

# A discriminated union on `name`, so a misspelt objective names the field and lists the known ones.
ObjectiveConfig: Any = Annotated[
    Union[tuple(entry.config for entry in OBJECTIVES.values())],  # noqa: UP007
    Field(discriminator="name"),
]


def build_objective(config: Any, interpolant: Interpolant, teacher: VelocityFn | None = None) -> Objective:
    """The objective named by `config.name`, ready to call; `teacher` for the distillation objectives."""
    return OBJECTIVES[config.name].objective(config, interpolant, teacher)


__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveConfig",
    "ObjectiveEntry",
    "ObjectiveOutput",
    "TimeLawConfig",
    "VelocityHeads",
    "build_objective",
    "sample_times",
]
