"""The driver-side reaper of placement groups left behind by dead Train controllers, on a real local Ray."""

import time

import pytest

from mgm_studies.studies.placement import (
    creator_is_dead,
    orphaned_placement_groups,
    reap_orphaned_placement_groups,
    reaping_orphaned_placement_groups,
)

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _placement_group_maker():
    import ray

    @ray.remote(num_cpus=0)
    class Maker:
        """Stands for a Train controller: creates a placement group and holds it (non-detached, like Ray Train's)."""

        def make(self, cpus: float) -> str:
            from ray.util.placement_group import placement_group

            group = placement_group([{"CPU": cpus}])
            ray.get(group.ready())
            return group.id.hex()

    return Maker


def _state(hex_id: str) -> str:
    import ray

    return ray.util.placement_group_table()[hex_id]["state"]


def _group(hex_id: str):
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    return PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))


def _wait(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.2)
    return predicate()


@pytest.mark.parametrize(
    ("flag", "creator_state", "dead"),
    [
        (True, None, True),  # the GCS marked the group when its creator died
        (False, "DEAD", True),  # registered after the creator's death was processed: the flag is never set (CI)
        (False, None, True),  # the creator's row is gone: the GCS evicts old dead actors
        (False, "ALIVE", False),
        (False, "RESTARTING", False),
        (False, "PENDING_CREATION", False),
    ],
)
def test_a_creator_counts_as_dead_by_the_group_flag_or_by_the_actor_table(flag, creator_state, dead):
    assert creator_is_dead(flag, creator_state) is dead


def test_a_placement_group_whose_creator_actor_died_is_removed_and_nothing_else_is():
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    maker_class = _placement_group_maker()
    alive, dying = maker_class.remote(), maker_class.remote()
    kept = ray.get(alive.make.remote(0.5))
    orphan = ray.get(dying.make.remote(0.5))
    own = placement_group([{"CPU": 0.5}])  # created by the driver, as Tune creates its trials' groups
    ray.get(own.ready())
    assert orphaned_placement_groups() == []  # every creator is alive

    ray.kill(dying)  # as Tune kills a stopped trial, and with it the Train controller it owns
    # Ray keeps the group (its job lives on): the leak the reaper exists for.
    assert _wait(lambda: orphaned_placement_groups() == [orphan])
    assert _state(orphan) == "CREATED"
    cpus_before = ray.available_resources().get("CPU", 0.0)

    assert reap_orphaned_placement_groups() == [orphan]
    assert _wait(lambda: _state(orphan) == "REMOVED")
    assert _wait(lambda: ray.available_resources().get("CPU", 0.0) >= cpus_before + 0.5 - 1e-9)
    assert _state(kept) == "CREATED" and _state(own.id.hex()) == "CREATED"
    assert reap_orphaned_placement_groups() == []  # nothing left to do: idempotent

    for group in (kept, own.id.hex()):
        remove_placement_group(_group(group))
    ray.kill(alive)


def test_the_reaper_thread_removes_an_orphan_while_the_sweep_runs_and_stops_with_the_block():
    import ray

    maker = _placement_group_maker().remote()
    orphan = ray.get(maker.make.remote(0.5))
    with reaping_orphaned_placement_groups(interval_s=0.2) as removed:
        ray.kill(maker)
        assert _wait(lambda: removed == [orphan])
        assert _wait(lambda: _state(orphan) == "REMOVED")
    threads = __import__("threading").enumerate()
    assert not [t for t in threads if t.name == "mgm-placement-group-reaper"]
