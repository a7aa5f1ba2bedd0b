"""What a Trainer's checkpoint holds and how a resume loads it back, and what a finished run exports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mgm_studies.training.trainer import Trainer


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """Everything a resume needs to continue bit-for-bit: weights, EMAs, optimiser, step, RNG states."""
    return {
        "config_hash": trainer.config.config_hash(),
        "step": trainer.step,
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.state_dict(),
        "networks": {phase: net.state_dict() for phase, net in trainer.networks.items() if phase != "model"},
        "trained_with": {
            phase: {name: module.state_dict() for name, module in modules.items()}
            for phase, modules in trainer.trained_with.items()
            if modules
        },
        "optimizers": {phase: opt.state_dict() for phase, opt in trainer.optimizers.items()},
        "objective": trainer.objective.state_dict(),
        "data_generator": trainer.data_generator.get_state(),
        "noise_generator": trainer.noise_generator.get_state(),
        "evaluations": trainer.areas.state_dict(),
    }


def restore_state(trainer: Trainer, state: dict[str, Any]) -> None:
    """Load `state` (from `trainer_state`) into `trainer`; a checkpoint of another config is refused."""
    if state["config_hash"] != trainer.config.config_hash():
        raise RuntimeError(
            f"checkpoint was written by config {state['config_hash']}, this run's config is "
            f"{trainer.config.config_hash()}: resume with the config the run started with"
        )
    trainer.model.load_state_dict(state["model"])
    trainer.ema.load_state_dict(state["ema"])
    for phase, network_state in state["networks"].items():
        trainer.networks[phase].load_state_dict(network_state)
    for phase, modules in state.get("trained_with", {}).items():  # absent from checkpoints before it existed
        for name, module_state in modules.items():
            trainer.trained_with[phase][name].load_state_dict(module_state)
    for phase, optimizer_state in state["optimizers"].items():
        trainer.optimizers[phase].load_state_dict(optimizer_state)
    trainer.objective.load_state_dict(state["objective"])
    trainer.data_generator.set_state(state["data_generator"])
    trainer.noise_generator.set_state(state["noise_generator"])
    trainer.areas.load_state_dict(state.get("evaluations", {}))  # absent from checkpoints before it existed
    trainer.step = int(state["step"])
    if trainer.static_step is not None:  # the optimiser's state tensors were replaced: capture them again
        trainer.static_step.reset()


def exported_state(trainer: Trainer) -> dict[str, Any]:
    """The model a finished run hands on (sampling, evaluation, teachers): config, raw and EMA weights."""
    return {
        "config": trainer.config.model_dump_json(),
        "step": trainer.step,
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.state_dict(),
    }
