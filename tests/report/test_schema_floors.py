"""summary.json fields of the top-eigenvalue certificate and the CKA permutation floors survive validation."""

from kdbias.schema import validate_method, validate_summary

BASE = {"status": "complete", "dataset": "digits", "preset": "smoke", "seed": 0, "test_acc": 0.5}


def test_certificate_and_floor_fields_are_kept():
    summary = dict(
        BASE,
        hessian_top_eig=3.0,
        hessian_top_eig_spread=0.002,
        hessian_top_eig_starts=2,
        hessian_top_eig_converged=True,
        cka={"exp3": {"contrast": 0.2, "floor_contrast": 0.001, "floor_trained": -0.01, "source": "random"}},
    )
    run, reason, dropped = validate_summary(summary, "exp3")
    assert reason is None and dropped == []
    assert run["hessian_top_eig_spread"] == 0.002 and run["hessian_top_eig_starts"] == 2
    assert run["cka"]["exp3"] == {"contrast": 0.2, "floor_contrast": 0.001, "floor_trained": -0.01, "source": "random"}


def test_bad_certificate_and_floor_values_are_dropped():
    summary = dict(
        BASE,
        hessian_top_eig_spread=-1.0,
        hessian_top_eig_starts=1.5,
        cka={"exp3": {"floor_contrast": "high", "floor_diag": float("nan")}},
    )
    run, _, dropped = validate_summary(summary, "exp3")
    assert "hessian_top_eig_spread" not in run and "hessian_top_eig_starts" not in run
    assert run["cka"]["exp3"] == {}
    assert len(dropped) == 4


def test_method_records_the_cka_estimator():
    assert validate_method({"loss": "cka", "unbiased_cka": True})[0] == {"loss": "cka", "unbiased_cka": True}
    method, why = validate_method({"loss": "cka", "unbiased_cka": "yes"})
    assert method is None and "unbiased_cka" in why
