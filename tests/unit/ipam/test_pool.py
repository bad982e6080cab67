import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.api import address
from porterlb.api.keys import PoolName
from porterlb.ipam import pool


def used(*numbers: int) -> pool.UsedAddresses:
    index = pool.UsedAddresses()
    for n in numbers:
        index.add(n)
    return index


def runs_of(numbers: set[int]) -> list[tuple[int, int]]:
    """The maximal runs of consecutive integers in `numbers`, computed the obvious way."""
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def test_pool_describes_itself():
    lan = pool.Pool(PoolName("lan"), address.parse("198.18.0.0/24"))
    assert str(lan) == 'Eip "lan" (198.18.0.0/24)'
    assert str(lan.usable) == "198.18.0.1-198.18.0.254"
    assert not lan.disabled


@pytest.mark.parametrize(
    ("taken", "lo", "hi", "lowest"),
    [
        pytest.param((), 10, 20, 10, id="empty"),
        pytest.param((10, 11, 12), 10, 20, 13, id="after-first-run"),
        pytest.param((11, 12), 10, 20, 10, id="first-free"),
        pytest.param((10, 12), 10, 20, 11, id="hole"),
        pytest.param(tuple(range(10, 21)), 10, 20, None, id="full"),
        pytest.param((7,), 7, 7, None, id="single-full"),
        pytest.param((2**128 - 1,), 1, 2**128 - 1, 1, id="v6-all-top-used"),
    ],
)
def test_lowest_free(taken, lo, hi, lowest):
    assert used(*taken).lowest_free(lo, hi) == lowest


@pytest.mark.parametrize(
    ("taken", "freed", "runs"),
    [
        pytest.param((1, 2, 3), 1, [(2, 3)], id="run-start"),
        pytest.param((1, 2, 3), 3, [(1, 2)], id="run-end"),
        pytest.param((1, 2, 3), 2, [(1, 1), (3, 3)], id="run-inside"),
        pytest.param((1, 3), 3, [(1, 1)], id="single"),
        pytest.param((3, 1, 2), 2, [(1, 1), (3, 3)], id="merged-both-sides"),
    ],
)
def test_remove_splits_runs(taken, freed, runs):
    index = used(*taken)
    index.remove(freed)
    assert index.runs() == runs
    assert len(index) == len(taken) - 1


@pytest.mark.parametrize("missing", [0, 4, 6, 100], ids=["below", "gap", "above-gap", "above"])
def test_remove_unused_raises_and_changes_nothing(missing):
    index = used(1, 2, 3, 5)
    with pytest.raises(KeyError):
        index.remove(missing)
    assert index.runs() == [(1, 3), (5, 5)]
    assert len(index) == 4


LO, HI = 0, 40


@given(st.lists(st.tuples(st.booleans(), st.integers(LO, HI)), max_size=120))
def test_matches_a_set(operations):
    """Any sequence of adds and removes keeps maximal runs, the count and the lowest free."""
    index, model = pool.UsedAddresses(), set[int]()
    for add, n in operations:
        if add and n not in model:
            index.add(n)
            model.add(n)
        elif not add and n in model:
            index.remove(n)
            model.discard(n)
        assert index.runs() == runs_of(model)
        assert len(index) == len(model)
        free = [m for m in range(LO, HI + 1) if m not in model]
        assert index.lowest_free(LO, HI) == (free[0] if free else None)
