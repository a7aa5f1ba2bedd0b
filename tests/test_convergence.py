import pytest

from mgm_studies.reporting.curves import normalised_area


def test_a_flat_curve_scores_its_value():
    assert normalised_area([250, 500, 1000], [0.7, 0.7, 0.7]) == pytest.approx(0.7)


def test_the_area_is_the_trapezoid_with_the_first_value_held_back_to_step_zero():
    # hand-computed: 100 * 4 (flat to step 100) + (4 + 2) / 2 * 100 + (2 + 1) / 2 * 200 = 400 + 300 + 300 = 1000
    assert normalised_area([100, 200, 400], [4.0, 2.0, 1.0]) == pytest.approx(1000 / 400)


def test_a_run_that_converges_earlier_scores_lower_with_the_same_final_value():
    fast = normalised_area([250, 500, 750, 1000], [1.0, 0.5, 0.5, 0.5])
    slow = normalised_area([250, 500, 750, 1000], [1.0, 1.0, 1.0, 0.5])
    assert fast < slow


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="one value per step"):
        normalised_area([1, 2], [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        normalised_area([2, 2], [1.0, 1.0])
