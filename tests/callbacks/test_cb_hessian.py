import math

import pytest
import torch.nn.functional as F

from kdbias.analytics.hessian import hessian_trace_estimate
from kdbias.analytics.lanczos import hessian_top_eigenvalue_lanczos
from kdbias.callbacks import HessianCallback
from kdbias.models import materialized_attention

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")

PROBES = dict(max_iter=4, tol=0.0, seed=3)  # 4 Hutchinson probes; Lanczos runs its eig_max_iter steps
EIG_STEPS = 6


def _direct(module, kit, num_images):
    """Trace and top eigenvalue computed independently: one batch, eval mode, fp32,
    explicit softmax attention (SDPA's fused CPU/GPU kernels have no double backward)."""
    dm = kit.datamodule()
    images, labels = dm.fixed_subset("train", num_images, seed=0)
    x = dm.normalize_images(images)
    module.eval()
    params = [p for p in module.model.parameters() if p.requires_grad]

    def loss_fn():
        return F.cross_entropy(module(x), labels)

    with materialized_attention(module.model):
        trace = hessian_trace_estimate(loss_fn, params, **PROBES)
        # the callback's certificate: independent starts from seeds 3 and 4, the largest Ritz value
        starts = [hessian_top_eigenvalue_lanczos(loss_fn, params, max_iter=EIG_STEPS, tol=0.0, seed=s) for s in (3, 4)]
        return trace, starts


def test_hessian_in_fit_bf16_periodic_and_final(kit, tiny_vit_module, tmp_path):
    module = tiny_vit_module()
    module.model.blocks[0].attn.eval()  # odd state that must survive
    cb = HessianCallback(
        every_n_epochs=2, num_images=40, batch_size=16, eig_max_iter=EIG_STEPS, **PROBES
    )  # chunks 16, 16, 8
    before, after = kit.ModeProbe(), kit.ModeProbe()
    trainer = kit.fit(module, [before, cb, after], tmp_path, max_epochs=3, precision="bf16-mixed")

    # epoch 1 measured at its validation end (autograd off there), and again at train end
    assert cb.num_measurements == 2
    assert any(off and not sanity for off, sanity in zip(before.no_grad, before.sanity))
    scalars = kit.scalars(trainer.log_dir)
    assert [s for s, _ in scalars["hessian/trace"]] == [4, 6]
    assert [s for s, _ in scalars["hessian/top_eig"]] == [4, 6]
    assert [m for _, m in before.records] == [m for _, m in after.records]
    assert module.model.training and not module.model.blocks[0].attn.training

    # the final values equal an independent fp32 computation on the trained weights
    estimate, eigen = _direct(module, kit, 40)
    trace = estimate.trace
    best = max(eigen, key=lambda e: e.eigenvalue)
    top, spread = best.eigenvalue, (best.eigenvalue - min(e.eigenvalue for e in eigen)) / abs(best.eigenvalue)
    assert math.isfinite(trace) and trace > 0
    summary = cb.summary_items()
    assert set(summary) == {
        "hessian_trace",
        "hessian_trace_stderr",
        "hessian_trace_probes",
        "hessian_trace_t",
        "hessian_top_eig",
        "hessian_top_eig_residual",
        "hessian_top_eig_spread",
        "hessian_top_eig_starts",
        "hessian_top_eig_iterations",
        "hessian_top_eig_converged",
    }
    assert summary["hessian_trace"] == pytest.approx(trace, rel=1e-4)
    assert summary["hessian_trace_stderr"] == pytest.approx(estimate.stderr, rel=1e-3)
    assert summary["hessian_trace_probes"] == estimate.num_probes == 4  # fixed: no early stop
    assert summary["hessian_trace_t"] == pytest.approx(3.182446305284263)  # t(0.975, 3), printed tables: 3.182
    assert summary["hessian_top_eig_starts"] == 2  # the certificate's independent starts
    assert summary["hessian_top_eig_iterations"] == 2 * EIG_STEPS and summary["hessian_top_eig_converged"] is False
    assert summary["hessian_top_eig"] == pytest.approx(top, rel=1e-4)
    assert summary["hessian_top_eig_residual"] == pytest.approx(best.residual, rel=1e-3, abs=1e-6)
    assert summary["hessian_top_eig_spread"] == pytest.approx(spread, rel=1e-2, abs=1e-5)
    assert scalars["hessian/top_eig_converged"][-1][1] == 0.0
    assert scalars["hessian/trace"][-1][1] == pytest.approx(trace, rel=1e-4)
    assert "hessian/trace_stderr" in scalars and "hessian/top_eig_residual" in scalars

    # trainer.validate runs its hooks under torch.inference_mode: same numbers there
    module.train()
    trainer.validate(module, datamodule=kit.datamodule(), verbose=False)
    assert before.inference[-1] and cb.num_measurements == 3
    assert cb.summary_items()["hessian_trace"] == pytest.approx(trace, rel=1e-4)
    assert [m for _, m in before.records] == [m for _, m in after.records]


def test_hessian_once_per_step_and_repeatable(kit, tiny_vit_module, tmp_path):
    logged = []
    for run in ("a", "b"):
        cb = HessianCallback(every_n_epochs=1, num_images=24, batch_size=24, eig_max_iter=EIG_STEPS, **PROBES)
        trainer = kit.fit(tiny_vit_module(), [cb], tmp_path / run, max_epochs=1)
        scalars = kit.scalars(trainer.log_dir)
        # the last epoch was measured at step 2: train end does not measure it again
        assert cb.num_measurements == 1 and [s for s, _ in scalars["hessian/trace"]] == [2]
        logged.append((scalars["hessian/trace"], scalars["hessian/top_eig"]))
        state = cb.state_dict()
        assert state["measured_step"] == 2 and state["last"] == cb.summary_items()
    assert logged[0] == logged[1]


def test_hessian_needs_trainable_student(kit, tmp_path):
    from kdbias.modules import TeacherModule

    module = TeacherModule("deit_tiny_p4", arch_kwargs=dict(kit.TINY_VIT), **kit.OPTIM)
    module.model.requires_grad_(False)
    with pytest.raises(TypeError, match="requires grad"):
        kit.fit(module, [HessianCallback()], tmp_path)
