"""The trial trainer on tiny models: learning happens, the base is untouched, metrics are reproducible."""

import math

import pytest
import torch

from autopeft.peft.plan import Plan, PlanEntry
from autopeft.testing import tiny_model
from autopeft.training.config import TrainConfig
from autopeft.training.data import TokenizedSplit
from autopeft.training.session import DivergedError, Session, classification_metrics, predicts_one_class
from autopeft.training.trial_run import resume_run, start_run, train_plan


def _toy_classification(n=96, seed=0):
    """Label = whether token 7 occurs: learnable by any method that lets the head see the tokens."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for i in range(n):
        length = int(torch.randint(4, 12, (1,), generator=g))
        row = torch.randint(10, 97, (length,), generator=g).tolist()
        label = i % 2
        if label:
            row[int(torch.randint(0, length, (1,), generator=g))] = 7
        ids.append(row)
        labels.append(label)
    return TokenizedSplit(ids, labels, 0)


def _session(family="bert", task="classification"):
    model = tiny_model(family, task, num_labels=2)
    from autopeft.core.arch import arch_from_config

    if task == "classification":
        splits = {"train": _toy_classification(96, 0), "validation": _toy_classification(48, 1),
                  "test": _toy_classification(48, 2)}
    else:
        g = torch.Generator().manual_seed(0)
        block = [torch.randint(1, 97, (16,), generator=g).tolist() for _ in range(8)]
        splits = {name: TokenizedSplit(block, None, 0) for name in ("train", "validation", "test")}
    return Session(model, arch_from_config(model.config), task, splits, pad_token_id=0)


LORA = Plan((PlanEntry("lora", (0, 1, 2), ("q", "v"), {"r": 4}),))


def test_training_reduces_loss_and_leaves_base_unchanged():
    session = _session()
    base = {k: v.clone() for k, v in session.model.state_dict().items() if "classifier" not in k}
    config = TrainConfig(steps=200, batch_size=16, lr=2e-2, precision="fp32")
    outcome = train_plan(session, LORA, config)
    first_loss = math.log(2)
    assert outcome.train_loss < first_loss - 0.1
    assert outcome.adapter_params == LORA.num_params(session.arch)
    after = {k: v for k, v in session.model.state_dict().items() if "classifier" not in k}
    assert set(after) == set(base) and all(torch.equal(base[k], after[k]) for k in base)
    assert set(outcome.state) == {k for k in outcome.state if k.startswith(("layers.", "head."))}


def test_same_seed_same_result_and_saved_adapter_reproduces_metric():
    session = _session()
    config = TrainConfig(steps=10, batch_size=8, precision="fp32", seed=3)
    a = train_plan(session, LORA, config)
    b = train_plan(session, LORA, config)
    assert a.validation.values == b.validation.values
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    again = session.evaluate_adapter(LORA, a.state, "validation", config)
    assert again.values == a.validation.values


def test_causal_lm_metrics_and_no_head_training():
    session = _session("llama", "causal-lm")
    outcome = train_plan(session, LORA, TrainConfig(steps=5, batch_size=4, lr=1e-2, precision="bf16"))
    assert outcome.head_params == 0
    assert outcome.validation.name == "loss" and not outcome.validation.greater_is_better
    assert outcome.validation.values["perplexity"] == pytest.approx(math.exp(outcome.validation.values["loss"]))


def test_divergence_is_detected():
    session = _session()
    with pytest.raises(DivergedError):
        train_plan(session, LORA, TrainConfig(steps=20, batch_size=8, lr=1e12, precision="fp32", max_grad_norm=1e30))


def test_classification_metrics():
    m = classification_metrics(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
    assert m.values["accuracy"] == 0.75
    # per class F1: 1.0, 2/3, 2/3
    assert m.values["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m.values["predicted_classes"] == 3 and not predicts_one_class(m.values)


def test_a_run_that_predicts_one_class_is_recognised_as_collapsed():
    labels = torch.tensor([0, 1, 1, 0, 1])
    collapsed = classification_metrics(torch.ones(5, dtype=torch.long), labels)
    assert collapsed.values["accuracy"] == pytest.approx(0.6) and collapsed.values["predicted_classes"] == 1
    assert predicts_one_class(collapsed.values)
    assert not predicts_one_class(classification_metrics(torch.tensor([1, 1, 1, 0, 1]), labels).values)
    # a split of one class, all right; metrics without the count (older studies, language models)
    assert not predicts_one_class(classification_metrics(torch.ones(3, dtype=torch.long), torch.ones(3)).values)
    assert not predicts_one_class({"accuracy": 0.6}) and not predicts_one_class({"loss": 2.0})


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_run_in_pieces_with_checkpoint_equals_uninterrupted_run(tmp_path, family):
    """Multi-fidelity promotion continues a run from disk: it must be the very same run."""
    from autopeft.training.trial_run import Checkpoint

    session = _session(family)
    plan = Plan((PlanEntry("lora", (1, 2), ("q", "v"), {"r": 2, "dropout": 0.1}),
                 PlanEntry("adapter", (2,), ("down",), {"size": 4})))
    config = TrainConfig(steps=12, batch_size=8, lr=1e-2, precision="fp32", seed=5)
    whole = train_plan(session, plan, config)

    with start_run(session, plan, config) as run:
        run.advance(5)
        run.checkpoint().save(tmp_path / "ckpt.safetensors")
    # another plan trains in between: the shared model must not leak state into the resumed run
    train_plan(session, LORA, TrainConfig(steps=3, batch_size=8, precision="fp32", seed=9))
    with resume_run(session, plan, config, Checkpoint.load(tmp_path / "ckpt.safetensors")) as run:
        assert run.step == 5
        run.advance(12)
        pieces = run.outcome(run.evaluate("validation"))

    assert pieces.validation.values == whole.validation.values
    assert set(pieces.state) == set(whole.state)
    assert all(torch.equal(pieces.state[k], whole.state[k]) for k in whole.state)
    assert pieces.train_loss == whole.train_loss


def test_corrupted_checkpoint_is_a_user_error(tmp_path):
    from autopeft.core.errors import UserError
    from autopeft.training.trial_run import Checkpoint

    path = tmp_path / "ckpt.safetensors"
    path.write_bytes(b"\x00" * 40)
    with pytest.raises(UserError, match="corrupted"):
        Checkpoint.load(path)


def test_method_training_hooks_are_called():
    """Modules may add a loss term and act after each optimizer step (AdaLoRA's rank allocation)."""
    session = _session()
    calls = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def regularization(self):
            return self.w ** 2 + 1.0

        def after_optimizer_step(self, step, total):
            calls.append((step, total, self.w.grad is not None))

    with start_run(session, LORA, TrainConfig(steps=3, batch_size=8, precision="fp32")) as run:
        run.handle.modules["probe"] = Probe()
        assert run.handle.regularization().item() == 1.0
        run.advance(3)
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]


def test_head_lr_scale_multiplies_only_the_heads_learning_rate():
    """A head-only plan at lr x 10 equals lr with head_lr_scale 10, bitwise; with adapters, the head's group
    follows the schedule at lr x scale and the adapters' at lr."""
    session = _session()
    head_only = Plan(())
    scaled = train_plan(session, head_only, TrainConfig(steps=20, lr=1e-3, head_lr_scale=10.0, precision="fp32"))
    plain = train_plan(session, head_only, TrainConfig(steps=20, lr=1e-2, precision="fp32"))
    unscaled = train_plan(session, head_only, TrainConfig(steps=20, lr=1e-3, precision="fp32"))
    assert set(scaled.state) == set(plain.state)
    assert all(torch.equal(scaled.state[k], plain.state[k]) for k in plain.state)
    assert not all(torch.equal(unscaled.state[k], plain.state[k]) for k in plain.state)

    config = TrainConfig(steps=10, lr=1e-3, head_lr_scale=4.0, warmup_ratio=0.0, precision="fp32")
    with start_run(session, LORA, config) as run:
        groups = run.optimizer.param_groups
        assert [g["lr_scale"] for g in groups] == [1.0, 4.0]
        head_ids = {id(p) for name, p in run.handle.trainable_parameters() if name.startswith("head.")}
        assert {id(p) for p in groups[1]["params"]} == head_ids and head_ids
        assert not head_ids & {id(p) for p in groups[0]["params"]}
        run.advance(1)
        assert groups[0]["lr"] == pytest.approx(1e-3) and groups[1]["lr"] == pytest.approx(4e-3)


def test_head_lr_scale_must_be_positive():
    from autopeft.core.errors import UserError

    with pytest.raises(UserError, match="head_lr_scale must be > 0"):
        TrainConfig(head_lr_scale=0.0)


def test_auto_precision_autocasts_only_where_bf16_is_native():
    from autopeft.core.errors import UserError
    from autopeft.training.step import step_recipe, uses_bf16

    # auto follows the hardware; an explicit bf16 is kept on any CPU (emulated) but not on a GPU without it
    assert [uses_bf16("auto", d, n) for d in ("cpu", "cuda") for n in (True, False)] == [True, False, True, False]
    assert [uses_bf16("bf16", d, n) for d in ("cpu", "cuda") for n in (True, False)] == [True, True, True, False]
    assert not any(uses_bf16("fp32", d, n) for d in ("cpu", "cuda") for n in (True, False))
    assert TrainConfig().precision == "auto"
    assert step_recipe(TrainConfig(), "cpu", native_bf16=False).autocast_bf16 is False
    assert step_recipe(TrainConfig(), "cpu", native_bf16=True).frozen_bf16_copies is True
    with pytest.raises(UserError, match="precision must be one of auto, bf16, fp32"):
        TrainConfig(precision="fp16")  # type: ignore[arg-type]
