"""The keyring of a key rotation, as a step table on one keyring and the receiver's clock."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.liveness import keys

OLD, NEW, NEWER = b"o" * 32, b"n" * 32, b"x" * 32
ROTATION = keys.Rotation(adopt_after=10.0, grace=20.0)


def test_a_first_key_signs_at_once_and_is_the_only_one_accepted():
    ring = keys.Keyring(OLD, rotation=ROTATION)
    assert (ring.signing(0.0), ring.accepted(0.0)) == (OLD, (OLD,))


# (what happens at `now`, the key learned then or None, signing, accepted)
STEPS = [
    ("start", 0.0, None, OLD, (OLD,)),
    ("learned: both accepted, the old one still signs", 100.0, NEW, OLD, (NEW, OLD)),
    ("the same key again is no news", 105.0, NEW, OLD, (NEW, OLD)),
    ("just before adopt_after", 109.999, None, OLD, (NEW, OLD)),
    ("adopt_after: the new key signs", 110.0, None, NEW, (NEW, OLD)),
    ("just before the grace ends", 119.999, None, NEW, (NEW, OLD)),
    ("the grace is over: the old key is refused", 120.0, None, NEW, (NEW,)),
    ("a later rotation starts over", 200.0, NEWER, NEW, (NEWER, NEW)),
    ("and ends the same", 220.0, None, NEWER, (NEWER,)),
]


def test_a_rotation_step_by_step():
    ring = keys.Keyring(OLD, rotation=ROTATION)
    for what, now, learned, signing, accepted in STEPS:
        if learned is not None:
            ring = ring.rotated(learned, now)
        assert (ring.signing(now), ring.accepted(now)) == (signing, accepted), what


def test_rotations_within_the_grace_keep_every_key_not_yet_expired():
    ring = keys.Keyring(OLD, rotation=ROTATION).rotated(NEW, 0.0).rotated(NEWER, 5.0)
    assert ring.accepted(6.0) == (NEWER, NEW, OLD)
    assert ring.signing(6.0) == NEW  # the key before NEWER, until NEWER has been known 10 s
    assert ring.accepted(20.0) == (NEWER, NEW)
    assert ring.accepted(25.0) == (NEWER,)


def test_going_back_to_a_retired_key_does_not_list_it_twice():
    ring = keys.Keyring(OLD, rotation=ROTATION).rotated(NEW, 0.0).rotated(OLD, 1.0)
    assert ring.accepted(2.0) == (OLD, NEW)


@given(
    st.lists(st.tuples(st.sampled_from([OLD, NEW, NEWER]), st.floats(0, 5)), max_size=8),
    st.floats(0, 100),
)
def test_the_signing_key_is_always_accepted(learned, later):
    """Whatever the rotations, a pinger never signs with a key it would refuse itself."""
    ring, now = keys.Keyring(OLD, rotation=ROTATION), 0.0
    for key, gap in learned:
        now += gap
        ring = ring.rotated(key, now)
    assert ring.signing(now + later) in ring.accepted(now + later)


@pytest.mark.parametrize(
    ("adopt_after", "grace"), [(-1.0, 5.0), (6.0, 5.0)], ids=["negative", "after-the-grace"]
)
def test_a_rotation_that_would_sign_with_a_refused_key_is_refused(adopt_after, grace):
    with pytest.raises(ValueError, match="need 0 <= adopt_after"):
        keys.Rotation(adopt_after=adopt_after, grace=grace)
