"""Reaping the placement groups that a stopped `train` trial leaves behind (platform.md, "Decisions").

A `TorchTrainer` launched inside a Tune trial reserves its workers' resources in a placement group created by its
Train controller actor. When a scheduler (ASHA) stops the trial, Tune kills the trial's actor and with it the
controller, but Ray removes a non-detached placement group only once its creator actor *and* its job are dead, and
the job (this sweep's driver) lives on. Ray Train starts a detached cleaner actor for this case; it asks the
dashboard's state API whether the controller lives, and on a busy 2-core machine that answer came too late or never
(CI: the group still held its CPU a minute later, and every later trial waited for it). This driver-side reaper reads
the GCS placement-group table directly and removes every group whose creator actor is dead: such a group can never
be used again by the sweep. Only this driver's job is searched (other jobs on a shared cluster may hand a group on
from an actor that has since exited), and a group created by the driver itself (Tune's trial resources) has no
creator actor and is left alone.

"Dead" is read from the actor table, not only from the group's own `creator_actor_dead` flag. When a stop kills a
trial's Train workers a moment before its controller, the controller may start restarting the worker group and create
a new placement group as it dies; the GCS registers that group after it has processed the controller's death, so the
flag is never set and Ray Train's cleaner never hears of the group. Seen on this machine (a 3-trial ASHA sweep on the
`train` executor): a group `CREATED`, flag false, its creator `DEAD`, holding one CPU until the driver exited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

_LIVE_STATES = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")


def creator_is_dead(creator_actor_dead: bool, creator_state: str | None) -> bool:
    """Whether a group's creator actor is dead: the group's own flag, or the creator's row in the actor table (`DEAD`,
    or gone: the GCS evicts old dead actors). The flag alone misses a group registered just after its creator's death
    was processed (module docstring)."""
    return creator_actor_dead or creator_state in (None, "DEAD")


def _actor_created_groups() -> dict[str, bool]:
    """This job's live, non-detached placement groups created by an actor: hex id -> whether that actor is dead."""
    import ray
    import ray._private.state
    from ray.core.generated import gcs_pb2

    accessor = ray._private.state.state._connect_and_get_accessor()
    job = bytes.fromhex(ray.get_runtime_context().get_job_id())
    groups = {}
    for raw in accessor.get_placement_group_table():
        group = gcs_pb2.PlacementGroupTableData.FromString(raw)
        state = gcs_pb2.PlacementGroupTableData.PlacementGroupState.Name(group.state)
        creator = ray.ActorID(group.creator_actor_id)
        if group.creator_job_id != job or state not in _LIVE_STATES or creator.is_nil() or group.is_detached:
            continue  # another job's, finished, created by a driver (nil creator), or meant to outlive its creator
        creator_state = None
        if not group.creator_actor_dead:
            info = accessor.get_actor_info(creator)
            if info is not None:
                creator_state = gcs_pb2.ActorTableData.ActorState.Name(gcs_pb2.ActorTableData.FromString(info).state)
        groups[group.placement_group_id.hex()] = creator_is_dead(group.creator_actor_dead, creator_state)
    return groups


def orphaned_placement_groups() -> list[str]:
    """Hex ids of this job's live, non-detached placement groups whose creator actor is dead (Ray connected)."""
    return [hex_id for hex_id, creator_dead in _actor_created_groups().items() if creator_dead]


def reap_orphaned_placement_groups() -> list[str]:
    """Remove every orphaned placement group (see the module docstring); returns the hex ids removed."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = []
    for hex_id in orphaned_placement_groups():
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id))))
        except Exception as error:  # already removed by Ray Train's own cleaner, or Ray shutting down
            logger.debug("placement group %s not removed: %s", hex_id, error)
            continue
        logger.info("removed placement group %s: its creator (a stopped trial's Train controller) is dead", hex_id)
        removed.append(hex_id)
    return removed


@contextmanager
def reaping_orphaned_placement_groups(interval_s: float = 2.0, settle_s: float = 30.0) -> Iterator[list[str]]:
    """While the block runs, reap orphaned placement groups every `interval_s` seconds in a daemon thread. Yields the
    list of removed ids (filled as it goes). A failing reap is logged, never raised: the sweep must not fail because
    of its janitor.

    When the block ends normally (every trial over, so every Train controller of this job on its way out), keep
    reaping for up to `settle_s` seconds until no actor-created group of this job is left: the last trial's
    controller dies a moment after Tune returns. On an exception (Ctrl-C) reap once and return at once."""
    removed: list[str] = []
    stop = threading.Event()

    def reap() -> None:
        try:
            removed.extend(reap_orphaned_placement_groups())
        except Exception as error:
            logger.warning("could not check for orphaned placement groups: %s", error)

    def loop() -> None:
        while not stop.wait(interval_s):
            reap()

    thread = threading.Thread(target=loop, name="mgm-placement-group-reaper", daemon=True)
    thread.start()
    try:
        yield removed
    except BaseException:
        stop.set()
        thread.join()
        reap()
        raise
    stop.set()
    thread.join()
    deadline = time.monotonic() + settle_s
    while True:
        reap()
        try:
            left = _actor_created_groups()
        except Exception as error:
            logger.warning("could not check for orphaned placement groups: %s", error)
            return
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    if left:
        logger.warning("placement groups still held by live actors after the sweep: %s", ", ".join(left))
