import lightning as L
import pytest
import torch
import torch.nn.functional as F

from kdbias.modules import CKADistillModule, KLDistillModule, TeacherModule

TINY_STUDENT = {"depth": 2}


def tiny_teacher() -> TeacherModule:
    return TeacherModule("deit_tiny_p4", num_classes=10, dataset="digits", model_kwargs={"depth": 1})


def kl_module(**kwargs) -> KLDistillModule:
    return KLDistillModule("deit_tiny_p4", tiny_teacher(), num_classes=10, dataset="digits",
                           model_kwargs=TINY_STUDENT, lr=1e-3, warmup_epochs=0, **kwargs)


def cka_module(**kwargs) -> CKADistillModule:
    return CKADistillModule(
        "deit_tiny_p4", teacher="dinov2_vits14", teacher_pretrained=None, teacher_image_size=56,
        layer_pairs=((0, 0), (1, 1)), teacher_kwargs={"depth": 2}, num_classes=10, dataset="digits",
        model_kwargs=TINY_STUDENT, lr=1e-3, warmup_epochs=0, **kwargs,
    )


def fixed_batch(dm, n=16):
    images, labels = dm.fixed_subset("train", n, seed=0)
    return dm.normalize_images(images), labels


def test_kl_loss_is_weighted_sum_of_ce_and_kd(digits_dm):
    module = kl_module(alpha=0.3, temperature=2.0)
    images, labels = fixed_batch(digits_dm)
    module.eval()  # no drop-path: both forward passes below see the same network
    losses, logits = module.training_losses(images, labels)
    with torch.no_grad():
        teacher_logits = module.teacher(images)
    ce = F.cross_entropy(logits, labels)
    # written out: tau^2 * KL(softmax(t/tau) || softmax(s/tau)), batchmean
    log_p_s, log_p_t = F.log_softmax(logits / 2.0, -1), F.log_softmax(teacher_logits / 2.0, -1)
    kd = 4.0 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()
    torch.testing.assert_close(losses["ce"], ce)
    torch.testing.assert_close(losses["kd"], kd)
    torch.testing.assert_close(losses["loss"], 0.7 * ce + 0.3 * kd)


def test_teacher_is_outside_state_dict_and_optimizer():
    module = kl_module()
    assert not any(k.startswith("teacher") for k in module.state_dict())
    teacher_params = {id(p) for p in module.teacher.parameters()}
    assert not teacher_params & {id(p) for p in module.parameters()}
    assert all(not p.requires_grad for p in module.teacher.parameters())
    assert not module.teacher.training


@pytest.mark.parametrize("factory", [kl_module, cka_module], ids=["kl", "cka"])
def test_few_steps_reduce_total_loss_on_fixed_batch(factory, digits_dm):
    torch.manual_seed(0)
    module = factory()
    images, labels = fixed_batch(digits_dm)
    module.train()
    params = [p for m in module.trainable_modules() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    before = module.training_losses(images, labels)[0]["loss"].item()
    for _ in range(8):
        loss = module.training_losses(images, labels)[0]["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = module.training_losses(images, labels)[0]["loss"].item()
    assert after < before


@pytest.mark.parametrize("factory", [kl_module, cka_module], ids=["kl", "cka"])
def test_fit_trains_only_the_student_and_keeps_teacher_in_eval(factory, digits_dm, tmp_path):
    module = factory()
    network = module.teacher_network
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=1, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=digits_dm)
    for k, v in module.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # bit-identical
    assert all(not m.training for m in network.modules())
    assert module.training  # Lightning put the student back in train mode after validation
    changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v, student_before[k])]
    assert changed
    assert all(p.grad is None for p in module.teacher.parameters())


def test_kl_fit_logs_components_and_teacher_accuracy(digits_dm):
    module = kl_module()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                        log_every_n_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=digits_dm)
    for tag in ("train/loss", "train/loss_ce", "train/loss_kd", "val/acc", "teacher/acc"):
        assert tag in trainer.callback_metrics, tag


def test_cka_module_projectors_train_and_student_exports_alone(digits_dm):
    module = cka_module()
    images, labels = fixed_batch(digits_dm, 8)
    losses, _ = module.training_losses(images, labels)
    losses["loss"].backward()
    assert all(p.grad is not None for p in module.projectors.parameters())
    assert set(losses) == {"loss", "ce", "cka", "tok"}
    torch.testing.assert_close(losses["loss"], losses["ce"] + 0.5 * losses["cka"] + 0.5 * losses["tok"])
    assert not any(k.startswith("projectors") for k in module.model.state_dict())


def test_cka_module_token_representation_runs(digits_dm):
    module = cka_module(cka_representation="token")
    images, labels = fixed_batch(digits_dm, 8)
    losses, _ = module.training_losses(images, labels)
    assert torch.isfinite(losses["loss"])


def test_cka_layer_index_beyond_depth_is_explained():
    with pytest.raises(ValueError, match="out of range"):
        CKADistillModule("deit_tiny_p4", teacher_pretrained=None, teacher_image_size=56,
                         layer_pairs=((5, 0),), teacher_kwargs={"depth": 2}, model_kwargs=TINY_STUDENT)


def test_distillation_token_variant_trains(digits_dm):
    module = kl_module(distill_token="hard")
    images, labels = fixed_batch(digits_dm, 8)
    losses, logits = module.training_losses(images, labels)
    assert logits.shape == (8, 10) and torch.isfinite(losses["loss"])
    module.eval()
    assert module(images).shape == (8, 10)
