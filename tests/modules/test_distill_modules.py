"""Distillation modules against formulas written out here: KD, CKA pairing, paired seeds, reloads."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import DIGITS, OPTIM, TINY_VIT, cka_module, kl_module, quiet_trainer, teacher_checkpoint, tiny_teacher
from lightning.pytorch.callbacks import ModelCheckpoint

from kdbias.data import IMAGENET_MEAN, IMAGENET_STD, dataset_stats
from kdbias.losses import unpaired_order
from kdbias.models import build_model
from kdbias.modules import KLDistillModule, TeacherModule, state_sha256
from kdbias.teacher import FrozenTeacher

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")
TINY_CONVNEXT = {"depths": [1, 1, 1, 1], "dims": [16, 16, 16, 16]}


def fixed_batch(dm, n=16):
    images, labels = dm.fixed_subset("train", n, seed=0)
    return dm.normalize_images(images), labels


def _stats(values):
    return torch.tensor(values).view(1, 3, 1, 1)


def test_kd_teacher_sees_its_own_statistics_and_the_loss_is_the_written_formula(digits_dm):
    """ConvNeXt V2 expects ImageNet statistics: a KD module that fed it the digits-normalised
    batch (bypassing the teacher's input adapter) would fail this test."""
    teacher = TeacherModule("convnextv2_tiny_cifar", arch_kwargs=TINY_CONVNEXT, optim=OPTIM, **DIGITS)
    module = kl_module(teacher, alpha=0.3, temperature=2.0)
    images, labels = fixed_batch(digits_dm)
    module.eval()  # no drop-path: both forward passes below see the same network
    losses, logits = module.training_losses(images, labels)
    data_mean, data_std = dataset_stats("digits")
    raw = images * _stats(data_std) + _stats(data_mean)  # back to [0, 1] pixels
    with torch.no_grad():
        teacher_logits = module.teacher.network(((raw - _stats(IMAGENET_MEAN)) / _stats(IMAGENET_STD)).contiguous())
        bypassed = module.teacher.network(images)
    assert not torch.allclose(teacher_logits, bypassed, atol=1e-3)  # the statistics matter for this teacher
    ce = F.cross_entropy(logits, labels)
    log_p_s, log_p_t = F.log_softmax(logits / 2.0, -1), F.log_softmax(teacher_logits / 2.0, -1)
    kd = 4.0 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()  # tau^2 KL(t || s), batchmean
    torch.testing.assert_close(losses["ce"], ce)
    torch.testing.assert_close(losses["kd"], kd, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses["loss"], 0.7 * ce + 0.3 * kd, rtol=1e-4, atol=1e-5)


def _linear_cka(x, y):
    """Biased linear CKA (Kornblith et al. 2019), written out: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    return (y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm())


def _song_hsic(x, y):
    """Unbiased HSIC (Song et al. 2012), written out on linear Grams with zeroed diagonals."""
    k, l = x.double() @ x.double().T, y.double() @ y.double().T
    k, l = k - torch.diag(k.diagonal()), l - torch.diag(l.diagonal())
    n, one = len(k), torch.ones(len(k), dtype=torch.float64)
    return (
        (k * l).sum() + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def _debiased_cka(x, y):
    return _song_hsic(x, y) / (_song_hsic(x, x) * _song_hsic(y, y)).sqrt()


def _pool(tokens, grid):
    b, n, d = tokens.shape
    side = int(n**0.5)
    k = side // grid
    return tokens.view(b, grid, k, grid, k, d).mean((2, 4)).reshape(b, grid * grid, d)


@pytest.mark.parametrize("unbiased", [None, False])  # None: the module's default, the debiased estimator
def test_cka_module_pairs_blocks_and_computes_its_losses_as_written(digits_dm, unbiased):
    flag = {} if unbiased is None else {"unbiased_cka": unbiased}
    module = cka_module(layer_pairs=[(1, 0), (0, 1)], **flag)  # crossed pairs: pairing errors cannot cancel
    reference = _linear_cka if unbiased is False else _debiased_cka
    module.eval()
    images, labels = fixed_batch(digits_dm, 8)
    losses, logits = module.training_losses(images, labels)

    taken = {}
    hooks = [
        module.model.blocks[i].register_forward_hook(lambda m, a, out, i=i: taken.__setitem__(("s", i), out))
        for i in (0, 1)
    ]
    hooks += [
        module.teacher.network.blocks[i].register_forward_hook(lambda m, a, out, i=i: taken.__setitem__(("t", i), out))
        for i in (0, 1)
    ]
    data_mean, data_std = dataset_stats("digits")
    raw = images * _stats(data_std) + _stats(data_mean)
    teacher_in = F.interpolate(
        (raw - _stats(IMAGENET_MEAN)) / _stats(IMAGENET_STD), size=(56, 56), mode="bilinear", align_corners=False
    )
    with torch.no_grad():
        module.model(images)  # the student: digits statistics, 32 px, 8x8 grid
        module.teacher.network(teacher_in)  # DINOv2/14 at 56 px: 4x4 grid
    for h in hooks:
        h.remove()
    grid = 4
    cka_terms, tok_terms = [], []
    for (s, t), projector in zip([(1, 0), (0, 1)], module.projectors):
        st = _pool(taken["s", s][:, 1:], grid)  # drop CLS, pool 8x8 -> 4x4
        tt = taken["t", t][:, 1:]
        cka_terms.append(1 - reference(st.flatten(1), tt.flatten(1)))
        projected = st @ projector.weight.T + projector.bias
        cos = (projected * tt).sum(-1) / (projected.norm(dim=-1) * tt.norm(dim=-1))
        tok_terms.append((1 - cos).mean())
    l_cka, l_tok = torch.stack(cka_terms).mean(), torch.stack(tok_terms).mean()
    torch.testing.assert_close(losses["cka"].double(), l_cka.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses["tok"].double(), l_tok.detach().double(), rtol=1e-4, atol=1e-5)
    ce = F.cross_entropy(logits, labels)
    torch.testing.assert_close(losses["loss"], ce + 0.5 * losses["cka"] + 0.5 * losses["tok"])


@pytest.mark.parametrize("representation", ["image", "token"])
def test_cka_module_logs_each_trained_cka_next_to_its_permutation_floor(digits_dm, representation):
    module = cka_module(cka_representation=representation)
    module.eval()
    images, labels = fixed_batch(digits_dm, 8)
    with torch.no_grad():
        losses, _ = module.training_losses(images, labels)  # no trainer: nothing logged
        student, teacher = module._taps_fn(images)[1], module.teacher_tokens(images)
        logged = {}
        module.log = lambda name, value, **_: logged.__setitem__(name, value)
        module._log_cka([1 - losses["cka"]] * 2, student, teacher)  # values: logged as given
    order = unpaired_order(8, torch.Generator().manual_seed(0))  # global step 0
    assert (order != torch.arange(8)).all()
    floors = []
    for (s_idx, t_idx), s, t in zip(module.layer_pairs, student, teacher):
        t_repaired = torch.stack([t[int(order[i])] for i in range(8)])  # image i meets image order[i]'s teacher
        if representation == "image":
            floors.append(_debiased_cka(s.flatten(1), t_repaired.flatten(1)))
        else:  # every token a sample, grid positions kept
            floors.append(_debiased_cka(s.flatten(0, 1), t_repaired.flatten(0, 1)))
        torch.testing.assert_close(logged[f"train/cka_floor_s{s_idx}_t{t_idx}"].double(), floors[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(logged["train/cka_floor"].double(), torch.stack(floors).mean(), atol=1e-5, rtol=0)
    torch.testing.assert_close(logged["train/cka"], losses["cka"])


def test_cka_module_fit_logs_the_floor(digits_dm, tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1)
    trainer.fit(cka_module(), datamodule=digits_dm)
    assert {"train/cka", "train/cka_floor", "train/cka_floor_s0_t0", "train/loss_cka"} <= set(trainer.callback_metrics)


def test_student_init_depends_on_the_seed_only():
    """The four student modules at one seed start from the same weights, whatever is built
    before them; the hash equals an independent build of the same network at that seed."""
    hashes = []
    for factory in (
        lambda: TeacherModule("deit_tiny_p4", arch_kwargs=TINY_VIT, optim=OPTIM, **DIGITS),
        lambda: kl_module(tiny_teacher("resnet18_cifar")),
        lambda: kl_module(tiny_teacher("deit_tiny_p4")),
        lambda: cka_module(),
    ):
        L.seed_everything(3, verbose=False)
        torch.rand(1000)  # whatever ran before (a teacher, callbacks) drew numbers
        hashes.append(factory().student_init_sha256)
    torch.manual_seed(3)
    reference = build_model("deit_tiny_p4", num_classes=10, **TINY_VIT)
    assert hashes == [state_sha256(reference)] * 4
    L.seed_everything(4, verbose=False)
    assert TeacherModule("deit_tiny_p4", arch_kwargs=TINY_VIT, optim=OPTIM, **DIGITS).student_init_sha256 != hashes[0]


def test_teacher_is_frozen_outside_state_dict_optimizer_and_ddp():
    module = kl_module()
    assert isinstance(module.teacher, FrozenTeacher)
    assert not any(k.startswith("teacher") for k in module.state_dict())
    module.load_state_dict(module.state_dict())  # strict: the teacher is neither saved nor expected
    trainable = {id(p) for m in module.trainable_modules() for p in m.parameters()}
    assert not trainable & {id(p) for p in module.teacher.parameters()}
    assert all(not p.requires_grad for p in module.teacher.parameters())
    module.train()
    assert not module.teacher.training and module.model.training
    # outside the module tree: DDP (which wraps the module) neither buckets nor broadcasts it
    in_tree = {id(t) for t in (*module.parameters(), *module.buffers())}
    assert not in_tree & {id(t) for t in (*module.teacher.parameters(), *module.teacher.buffers())}
    assert all(k.startswith(("student.", "input_adapter.")) or "acc" in k for k in module.state_dict())


@pytest.mark.parametrize("factory", [kl_module, cka_module], ids=["kl", "cka"])
def test_fit_trains_only_the_student_and_keeps_teacher_in_eval(factory, digits_dm, tmp_path):
    module = factory()
    teacher_before = {k: v.clone() for k, v in module.teacher.network.state_dict().items()}
    student_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=digits_dm)
    for k, v in module.teacher.network.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # bit-identical
    assert all(not m.training for m in module.teacher.modules())
    assert module.training  # Lightning put the student back in train mode after validation
    assert [k for k, v in module.model.state_dict().items() if not torch.equal(v, student_before[k])]
    assert all(p.grad is None for p in module.teacher.parameters())


@pytest.mark.parametrize(
    "factory",
    [
        lambda: TeacherModule("deit_tiny_p4", arch_kwargs=TINY_VIT, optim=OPTIM, **DIGITS),
        kl_module,
        cka_module,
    ],
    ids=["teacher_module", "kl", "cka"],
)
def test_modules_reload_from_their_checkpoints(factory, digits_dm, tmp_path):
    module = factory()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[checkpoint],
        num_sanity_val_steps=0,
    )
    if isinstance(module, KLDistillModule):  # a checkpoint names its teacher by path: give it one
        module = kl_module(str(teacher_checkpoint(tmp_path / "teacher", digits_dm)))
    trainer.fit(module, datamodule=digits_dm)
    loaded = type(module).load_from_checkpoint(tmp_path / "last.ckpt")
    images, _ = fixed_batch(digits_dm, 8)
    module.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), module(images))
    assert dict(loaded.hparams) == dict(module.hparams)


def test_kl_fit_logs_components_and_teacher_accuracy(digits_dm, tmp_path):
    module = kl_module()
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1, log_every_n_steps=1
    )
    trainer.fit(module, datamodule=digits_dm)
    for tag in ("train/loss", "train/loss_ce", "train/loss_kd", "val/acc", "val/teacher_acc"):
        assert tag in trainer.callback_metrics, tag
    (result,) = trainer.test(module, datamodule=digits_dm, verbose=False)
    assert {"test/acc", "test/loss", "test/teacher_acc"} <= set(result)


def test_cka_module_projectors_train_and_student_exports_alone(digits_dm):
    module = cka_module()
    images, labels = fixed_batch(digits_dm, 8)
    losses, _ = module.training_losses(images, labels)
    losses["loss"].backward()
    assert all(p.grad is not None for p in module.projectors.parameters())
    assert set(losses) == {"loss", "ce", "cka", "tok"}
    assert not any(k.startswith("projectors") for k in module.model.state_dict())


def test_cka_module_token_representation_runs(digits_dm):
    images, labels = fixed_batch(digits_dm, 8)
    losses, _ = cka_module(cka_representation="token").training_losses(images, labels)
    assert torch.isfinite(losses["loss"])


def test_bad_module_arguments_are_explained():
    with pytest.raises(ValueError, match="out of range"):
        cka_module(layer_pairs=[(5, 0)])
    with pytest.raises(ValueError, match="alpha"):
        kl_module(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        kl_module(temperature=0)
    with pytest.raises(ValueError, match="lambda"):
        cka_module(lambda_cka=-1)
    with pytest.raises(ValueError, match="auto"):
        KLDistillModule("deit_tiny_p4", teacher="auto", **DIGITS)


def test_distillation_token_variant_trains(digits_dm):
    module = kl_module(distill_token="hard")
    images, labels = fixed_batch(digits_dm, 8)
    losses, logits = module.training_losses(images, labels)
    assert logits.shape == (8, 10) and torch.isfinite(losses["loss"])
    module.eval()
    assert module(images).shape == (8, 10)


def test_a_student_without_teacher_evaluates_but_does_not_train(digits_dm, tmp_path):
    module = KLDistillModule("deit_tiny_p4", teacher=None, arch_kwargs=TINY_VIT, **DIGITS)
    images, _ = fixed_batch(digits_dm, 4)
    assert module(images).shape == (4, 10)
    with pytest.raises(ValueError, match="no teacher"):
        quiet_trainer(tmp_path, max_epochs=1).fit(module, datamodule=digits_dm)


def test_teacher_checkpoint_of_the_wrong_family_is_refused(tmp_path, digits_dm):
    vit = teacher_checkpoint(tmp_path, digits_dm, "deit_tiny_p4")
    with pytest.raises(ValueError, match="holds a VisionTransformer"):
        FrozenTeacher.from_checkpoint(vit, "digits", 10, family="ResNet")
    with pytest.raises(ValueError, match="trained on 'digits'"):
        FrozenTeacher.from_checkpoint(vit, "cifar10", 10)
    assert FrozenTeacher.from_checkpoint(vit, "digits", 10).family == "VisionTransformer"


def test_teacher_val_accuracy_is_measured_once_and_is_the_teachers(digits_dm, tmp_path):
    """The frozen teacher's held-out accuracy cannot change between epochs: measured and logged in
    the first validation only, and it is the arg-max accuracy of the teacher on those images."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    module = kl_module()
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = quiet_trainer(tmp_path, max_epochs=3, limit_train_batches=1, limit_val_batches=2, logger=logger)
    trainer.fit(module, datamodule=digits_dm)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["val/teacher_acc"]) for r in rows if r.get("val/teacher_acc")]
    assert len(logged) == 1 and len([r for r in rows if r.get("val/acc")]) == 3
    loader = digits_dm.val_dataloader()
    images, labels = map(torch.cat, zip(*[batch for _, batch in zip(range(2), loader)]))
    module.eval()
    with torch.no_grad():
        predicted = module.teacher.logits(module.dataset_normalised(images)).argmax(1)
    assert logged[0] == pytest.approx(float((predicted == labels).double().mean()))
