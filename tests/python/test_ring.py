"""ringattn.ring_attention across W = 2 and 3 processes (a gloo group for the
bootstrap; the ring over ringattn's UCX communicator): every layout and
mask, forward and backward against float64 attention on the gathered
tensors, odd lengths, GQA, bf16; every strategy (allgather, ulysses,
hybrid, auto); the layout helpers; determinism;
torch.compile; and the failures (options that differ, a silent rank)."""
import pytest

import dist_cases
from conftest import spawn


@pytest.mark.parametrize("world", [2, 3])
def test_ring_matches_float64(world):
    spawn(dist_cases.ring_matches_float64, world, 301, 4, 2, 32, "float32")


@pytest.mark.parametrize("world", [2, 3])
def test_ring_with_packed_documents(world):
    spawn(dist_cases.ring_with_documents, world, 211)


def test_a_new_group_gets_new_communicators():
    from conftest import free_port
    spawn(dist_cases.a_new_group_gets_new_communicators, 2, [free_port(), free_port()])


def test_ring_bf16_mqa():
    spawn(dist_cases.ring_matches_float64, 2, 130, 4, 1, 64, "bfloat16")


@pytest.mark.parametrize("world,S", [(2, 301), (3, 7), (3, 2)])
def test_shard_unshard_positions(world, S):
    spawn(dist_cases.layout_round_trips, world, S)


def test_ring_is_deterministic():
    spawn(dist_cases.ring_is_deterministic, 2)


def test_options_that_differ_fail_on_every_rank():
    spawn(dist_cases.options_that_differ_fail_everywhere, 2)


def test_a_rank_that_never_calls_is_a_timeout():
    spawn(dist_cases.silent_rank_times_out, 3, 2)


def test_compiled_ring_equals_eager():
    spawn(dist_cases.compiled_ring_equals_eager, 2)


def test_a_rank_that_dies_is_an_error_within_the_timeout():
    spawn(dist_cases.dead_rank_is_an_error, 3, 1)


@pytest.mark.parametrize("world,strategy", [(2, "allgather"), (2, "ulysses"), (3, "ulysses"),
                                            (4, "hybrid:2x2"), (2, "auto")])
def test_every_strategy_matches_float64(world, strategy):
    spawn(dist_cases.ring_matches_float64, world, 157, 4, 2, 32, "float32", "cpu", strategy,
          ("zigzag", "striped") if world < 4 else ("zigzag",))


def test_bad_strategies_are_value_errors():
    spawn(dist_cases.strategy_errors, 2)


@pytest.mark.parametrize("strategy", ["allgather", "ulysses"])
def test_a_rank_that_dies_fails_the_collectives_within_the_timeout(strategy):
    spawn(dist_cases.dead_rank_is_an_error, 3, 1, strategy)
