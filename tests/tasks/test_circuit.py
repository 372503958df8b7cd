"""The circuit breaker's states: closed, open (down), half-open (one probe)."""

from __future__ import annotations

import pytest

from microfedi.store.tasks import HostRow
from microfedi.tasks.circuit import HostCircuit

NOW = 1_700_000_000.0


@pytest.fixture
def circuit() -> HostCircuit:
    return HostCircuit(failure_threshold=3, base_cooldown=60, max_cooldown=600, host_limit=4)


def test_it_opens_after_the_threshold_of_consecutive_failures(circuit: HostCircuit) -> None:
    assert not circuit.record_failure("a.example", "refused", NOW)
    assert not circuit.record_failure("a.example", "refused", NOW)
    assert circuit.limits(NOW) == {}
    assert circuit.record_failure("a.example", "refused", NOW)
    assert circuit.is_down("a.example", NOW) and circuit.down_hosts(NOW) == ["a.example"]
    assert circuit.limits(NOW) == {"a.example": 0}
    writes = circuit.take_writes()
    assert writes.defer_until == {"a.example": NOW + 60}
    assert writes.rows[-1] == HostRow("a.example", 3, NOW + 60, "refused", None, NOW)
    assert not circuit.take_writes()


def test_a_success_in_between_resets_the_count(circuit: HostCircuit) -> None:
    circuit.record_failure("a.example", "refused", NOW)
    circuit.record_failure("a.example", "refused", NOW)
    circuit.record_success("a.example", NOW)
    circuit.record_failure("a.example", "refused", NOW)
    assert not circuit.is_down("a.example", NOW)


def test_after_the_cooldown_one_probe_goes_through_and_a_failed_probe_doubles_it(circuit: HostCircuit) -> None:
    for _ in range(3):
        circuit.record_failure("a.example", "refused", NOW)
    assert circuit.next_reopening(NOW) == NOW + 60
    later = NOW + 61
    assert circuit.limits(later) == {"a.example": 1}  # half-open
    assert circuit.record_failure("a.example", "still refused", later)
    assert circuit.limits(later) == {"a.example": 0}
    assert circuit.next_reopening(later) == later + 120
    assert circuit.cooldown(20) == 600  # capped


def test_failures_of_runs_already_under_way_do_not_lengthen_the_cooldown(circuit: HostCircuit) -> None:
    for _ in range(3):
        circuit.record_failure("a.example", "refused", NOW)
    for _ in range(3):
        assert not circuit.record_failure("a.example", "refused", NOW + 1)
    assert circuit.next_reopening(NOW + 1) == NOW + 60


def test_a_successful_probe_closes_it(circuit: HostCircuit) -> None:
    for _ in range(3):
        circuit.record_failure("a.example", "refused", NOW)
    circuit.take_writes()
    circuit.record_success("a.example", NOW + 61)
    assert circuit.limits(NOW + 61) == {} and not circuit.down_hosts(NOW + 61)
    writes = circuit.take_writes()
    assert writes.rows == [HostRow("a.example", 0, None, None, NOW + 61, None)]
    assert not writes.undefer  # the deferral has passed already


def test_a_success_while_down_lets_the_deferred_tasks_go_at_once(circuit: HostCircuit) -> None:
    for _ in range(3):
        circuit.record_failure("a.example", "refused", NOW)
    circuit.take_writes()  # the deferral is written
    circuit.record_success("a.example", NOW + 5)
    assert circuit.take_writes().undefer == {"a.example": NOW + 60}


def test_healthy_hosts_are_written_only_now_and_then(circuit: HostCircuit) -> None:
    circuit.record_success("b.example", NOW)
    circuit.record_success("b.example", NOW + 1)
    assert len(circuit.take_writes().rows) == 1
    circuit.record_success("b.example", NOW + 601)
    assert len(circuit.take_writes().rows) == 1


def test_the_state_is_loaded_from_the_hosts_table(circuit: HostCircuit) -> None:
    circuit.load([HostRow("a.example", 7, NOW + 30, "refused", None, NOW)])
    assert circuit.is_down("a.example", NOW)
    assert circuit.limits(NOW + 31) == {"a.example": 1}
