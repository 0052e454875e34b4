"""The rules every run-time registry shares: built-ins stay, taken names are replaced only when asked."""

import pytest

from pacbayes_sft.bounds import BOUNDS, register_bound, unregister_bound
from pacbayes_sft.registry import check_free, pop_registered


def test_check_free_refuses_built_ins_always_and_taken_names_unless_replacing():
    reg = {"seeger": 1, "mine": 2}
    check_free(reg, "new", built_in={"seeger"}, kind="bound", replace=False)  # free: no error
    check_free(reg, "mine", built_in={"seeger"}, kind="bound", replace=True)
    with pytest.raises(ValueError, match="name: the bound 'mine' is already registered"):
        check_free(reg, "mine", built_in={"seeger"}, kind="bound", replace=False)
    with pytest.raises(ValueError, match="family: the figure 'seeger' is a built-in figure"):
        check_free(reg, "seeger", built_in={"seeger"}, kind="figure", replace=True, arg="family")


def test_pop_registered_removes_only_registered_non_built_in_names():
    reg = {"seeger": 1, "mine": 2}
    with pytest.raises(ValueError, match="the built-in bound 'seeger' cannot be removed"):
        pop_registered(reg, "seeger", built_in={"seeger"}, kind="bound")
    with pytest.raises(ValueError, match=r"no bound 'other' is registered \(known: seeger, mine\)"):
        pop_registered(reg, "other", built_in={"seeger"}, kind="bound")
    assert pop_registered(reg, "mine", built_in={"seeger"}, kind="bound") == 2 and reg == {"seeger": 1}


def test_a_registry_uses_the_shared_rules():
    with pytest.raises(ValueError, match="name: the bound 'seeger' is a built-in bound"):
        register_bound("seeger", lambda *a: 0.0, replace=True)
    register_bound("toy_bound", lambda r, kl, n, d: r)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_bound("toy_bound", lambda r, kl, n, d: r)
    finally:
        unregister_bound("toy_bound")
    assert "toy_bound" not in BOUNDS
