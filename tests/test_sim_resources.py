"""The simulated agents' resources: a Mesos `resources` list read at once equals the sum of
its entries read one by one, and addition and subtraction keep three decimals."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tools.sim_master.resources import Resources

scalar = st.sampled_from([0.0, 0.0004, 0.001, 0.01, 0.1, 0.25, 1, 2.5, 32, 64.5, 1e-5])
entry = st.one_of(
    st.builds(lambda v: {"name": "cpus", "type": "SCALAR", "scalar": {"value": v}}, scalar),
    st.builds(lambda v: {"name": "mem", "type": "SCALAR", "scalar": {"value": v}}, scalar),
    st.builds(
        lambda r: {
            "name": "ports",
            "type": "RANGES",
            "ranges": {"range": [{"begin": b, "end": b + n} for b, n in r]},
        },
        st.lists(st.tuples(st.integers(31000, 31100), st.integers(0, 20)), max_size=3),
    ),
    st.just({"name": "disk", "type": "SCALAR", "scalar": {"value": 10}}),
)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(entry, max_size=6))
def test_a_list_is_the_sum_of_its_entries(entries):
    one_by_one = Resources()
    for e in entries:
        one_by_one = one_by_one + Resources.from_proto([e])
    assert Resources.from_proto(entries) == one_by_one


@settings(max_examples=200, deadline=None)
@given(a=st.lists(entry, max_size=4), b=st.lists(entry, max_size=4))
def test_adding_then_taking_away_gives_back_what_was_there(a, b):
    ra, rb = Resources.from_proto(a), Resources.from_proto(b)
    both = ra + rb
    assert (both - rb).cpus == ra.cpus and (both - rb).mem == ra.mem
    assert both.contains(ra) and both.contains(rb)
