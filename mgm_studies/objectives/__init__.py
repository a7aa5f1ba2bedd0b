"""The objective registry: short names in configs map to (config model, objective class)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives.base import Objective, ObjectiveOutput, VelocityHeads
from mgm_studies.objectives.flow_map import (
    EMDConfig,
    ESDConfig,
    EulerianMapDistillation,
    EulerianSelfDistillation,
    LagrangianMapDistillation,
    LagrangianSelfDistillation,
    LMDConfig,
    LSDConfig,
    ProgressiveSelfDistillationMidpoint,
    ProgressiveSelfDistillationUniform,
    PSDMidpointConfig,
    PSDUniformConfig,
)
from mgm_studies.objectives.gm import (
    FlowGeneratorMatching,
    GMFlowConfig,
    GMJumpConfig,
    GMSuperpositionConfig,
    JumpGeneratorMatching,
    SuperpositionGeneratorMatching,
)
from mgm_studies.objectives.itvm import InitialTerminalVelocityMatching, ITVMConfig
from mgm_studies.objectives.mgm import MGMConfig, MidpointGenerativeModel
from mgm_studies.objectives.pfmm import PFMMConfig, ProgressiveFlowMapMatching
from mgm_studies.objectives.si import SIConfig, StochasticInterpolantObjective
from mgm_studies.objectives.time_laws import TimeLawConfig, sample_times
from mgm_studies.sampling import VelocityFn

# name -> (config model, objective class); a new objective is one module and one line here.
OBJECTIVES: dict[str, tuple[type, type[Objective]]] = {
    "si": (SIConfig, StochasticInterpolantObjective),
    "lsd": (LSDConfig, LagrangianSelfDistillation),
    "esd": (ESDConfig, EulerianSelfDistillation),
    "psd_midpoint": (PSDMidpointConfig, ProgressiveSelfDistillationMidpoint),
    "psd_uniform": (PSDUniformConfig, ProgressiveSelfDistillationUniform),
    "lmd": (LMDConfig, LagrangianMapDistillation),
    "emd": (EMDConfig, EulerianMapDistillation),
    "itvm": (ITVMConfig, InitialTerminalVelocityMatching),
    "pfmm": (PFMMConfig, ProgressiveFlowMapMatching),
    "mgm": (MGMConfig, MidpointGenerativeModel),
    "gm_flow": (GMFlowConfig, FlowGeneratorMatching),
    "gm_jump": (GMJumpConfig, JumpGeneratorMatching),
    "gm_superposition": (GMSuperpositionConfig, SuperpositionGeneratorMatching),
}

_config_classes = tuple(config for config, _ in OBJECTIVES.values())
# A discriminated union on `name`, so a misspelt objective names the field and lists the known ones.
ObjectiveConfig: Any = (
    Annotated[Union[_config_classes], Field(discriminator="name")]  # noqa: UP007
    if len(_config_classes) > 1
    else _config_classes[0]
)


def build_objective(config: Any, interpolant: Interpolant, teacher: VelocityFn | None = None) -> Objective:
    """The objective named by `config.name`, ready to call; `teacher` for the distillation objectives."""
    _, objective_class = OBJECTIVES[config.name]
    return objective_class(config, interpolant, teacher)


__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveConfig",
    "ObjectiveOutput",
    "TimeLawConfig",
    "VelocityHeads",
    "build_objective",
    "sample_times",
]
