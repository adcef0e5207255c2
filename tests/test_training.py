"""Model.fit: learning, reproducibility, the History it records, validation, early stopping,
callbacks, gradient clipping and what happens on NaN/inf.

fit must equal the fundamentals run by hand (forward, backward, clip, step over the same
minibatches) bit for bit; everything else here builds on that.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import chainrule as cr


def tanh_net(in_features=3, out_features=2, seed=0, **kwargs):
    kwargs.setdefault("dtype", "float64")
    return cr.Model([cr.Dense(in_features, 8), cr.Tanh(), cr.Dense(8, out_features)],
                    seed=seed, **kwargs)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


# ---------------------------------------------------------------------------------------------
# learning and reproducibility
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_xor_learns(xor, dtype):
    X, y = xor
    model = cr.Model([cr.Dense(2, 8), cr.Tanh(), cr.Dense(8, 1)], loss="bce_with_logits",
                     optimizer=cr.SGD(lr=0.5), dtype=dtype, seed=0)
    hist = model.fit(X, y, epochs=1000, batch_size=4)
    np.testing.assert_array_equal(model.predict_classes(X), y[:, 0])
    assert hist.loss[-1] < 0.05 < hist.loss[0]
    assert hist.accuracy[-1] == 1.0
    assert model.evaluate(X, y)["accuracy"] == 1.0


def test_fit_equals_the_fundamentals_by_hand(regression):
    X, y = regression
    fitted = tanh_net(optimizer=cr.SGD(lr=0.05, momentum=0.9))
    by_hand = tanh_net(optimizer=cr.SGD(lr=0.05, momentum=0.9))
    hist = fitted.fit(X, y, epochs=3, batch_size=16, shuffle=False, clip_grad_norm=0.5)
    losses, norms = [], []
    for _ in range(3):
        ep_l, ep_n = [], []
        for b in range(0, 64, 16):
            by_hand.zero_grad()
            by_hand.forward(X[b:b + 16])
            ep_l.append(by_hand.backward(y[b:b + 16]))
            ep_n.append(by_hand.clip_grad_norm(0.5))
            by_hand.step()
        losses.append(np.mean(ep_l))
        norms.append(ep_n)
    assert_same_weights(fitted, by_hand)
    np.testing.assert_allclose(hist.loss, losses, rtol=1e-14)
    np.testing.assert_allclose(hist.grad_norm, [np.mean(n) for n in norms], rtol=1e-14)
    assert hist.grad_norm_max == [max(n) for n in norms]
    assert max(hist.grad_norm_max) > 0.5  # the clip was active


def _borrowed_rows_case(kind, rng):
    """(model factory, X, y) for test_fit_in_order_equals_by_hand_on_every_input_kind."""
    if kind == "class_indices":
        X = rng.standard_normal((37, 5)).astype(np.float32)
        y = rng.integers(0, 3, 37)
        return (lambda: cr.Model([cr.Dense(5, 8), cr.ReLU(), cr.Dense(8, 3)],
                                 loss="cross_entropy", dtype="float32", seed=1)), X, y
    if kind == "activation_first":  # the first layer's backward reads the input rows
        X = rng.standard_normal((37, 4))
        y = rng.standard_normal((37, 2))
        return (lambda: cr.Model([cr.Tanh(), cr.Dense(4, 2)], dtype="float64", seed=2)), X, y
    X = rng.standard_normal((21, 6, 3))  # sequences, an output per step
    y = rng.standard_normal((21, 6, 1))
    return (lambda: cr.Model([cr.RNN(3, 5), cr.Dense(5, 1)], dtype="float64", seed=3)), X, y


@pytest.mark.parametrize("kind", ["class_indices", "activation_first", "sequences"])
def test_fit_in_order_equals_by_hand_on_every_input_kind(kind, rng):
    # In order, fit reads each minibatch's rows where they lie in the caller's arrays (no copy):
    # the same bits as forward/backward/step on slices, and the arrays are left as they were.
    make, X, y = _borrowed_rows_case(kind, rng)
    keep = (X.copy(), y.copy())
    fitted, by_hand = make(), make()
    hist = fitted.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    losses = []
    for _ in range(2):
        total = 0.0
        for b in range(0, len(X), 8):
            by_hand.zero_grad()
            by_hand.forward(X[b:b + 8])
            total += by_hand.backward(y[b:b + 8]) * len(X[b:b + 8])
            by_hand.step()
        losses.append(total / len(X))
    assert_same_weights(fitted, by_hand)
    np.testing.assert_allclose(hist.loss, losses, rtol=1e-6)
    np.testing.assert_array_equal(X, keep[0])
    np.testing.assert_array_equal(y, keep[1])
    with pytest.raises(RuntimeError, match="forward"):  # fit leaves no tape behind
        fitted.backward(y[:8])


def test_last_batch_may_be_smaller(regression):
    X, y = regression
    X, y = X[:10], y[:10]
    fitted, by_hand = tanh_net(), tanh_net()
    hist = fitted.fit(X, y, epochs=1, batch_size=4, shuffle=False)
    losses = []
    for b in (0, 4, 8):
        by_hand.zero_grad()
        by_hand.forward(X[b:b + 4])
        losses.append(by_hand.backward(y[b:b + 4]) * len(X[b:b + 4]))
        by_hand.step()
    assert_same_weights(fitted, by_hand)
    assert hist.loss[0] == pytest.approx(sum(losses) / 10, rel=1e-14)


def test_batch_size_none_is_one_full_batch(regression):
    X, y = regression
    a, b = tanh_net(), tanh_net()
    # shuffle=False everywhere: a shuffled batch sums its rows in another order, which rounds
    # differently.
    a.fit(X, y, epochs=2, batch_size=None, shuffle=False)
    b.fit(X, y, epochs=2, batch_size=len(X), shuffle=False)
    assert_same_weights(a, b)
    c = tanh_net()
    c.fit(X, y, epochs=2, batch_size=10 ** 30, shuffle=False)  # larger than any index: one batch
    assert_same_weights(a, c)


@pytest.mark.parametrize("optimizer", [cr.SGD(lr=0.1, momentum=0.9), cr.Adam(lr=0.01)])
def test_same_seed_reproduces_bit_for_bit(regression, optimizer):
    X, y = regression
    runs = []
    for _ in range(2):
        model = tanh_net(seed=42, optimizer=optimizer, dtype="float32")
        hist = model.fit(X, y, epochs=5, batch_size=8, shuffle=True, validation_split=0.25)
        runs.append((model, hist))
    (m1, h1), (m2, h2) = runs
    assert_same_weights(m1, m2)
    assert h1 == h2 and h1.history == h2.history
    np.testing.assert_array_equal(m1.predict(X), m2.predict(X))


def test_different_seeds_differ(regression):
    X, y = regression
    a, b = tanh_net(seed=1), tanh_net(seed=2)
    assert not np.array_equal(a.state_dict()["0.weight"], b.state_dict()["0.weight"])
    # Same initial weights, different seeds: only the shuffling differs, and that shows.
    b.load_state_dict(a.state_dict())
    ha = a.fit(X, y, epochs=2, batch_size=8)
    hb = b.fit(X, y, epochs=2, batch_size=8)
    assert ha.loss != hb.loss
    assert not np.array_equal(a.state_dict()["0.weight"], b.state_dict()["0.weight"])


def test_shuffle_changes_the_order_between_epochs(regression):
    X, y = regression
    a, b = tanh_net(seed=3), tanh_net(seed=3)
    a.fit(X, y, epochs=2, batch_size=8, shuffle=True)
    b.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    assert not np.array_equal(a.state_dict()["0.weight"], b.state_dict()["0.weight"])


def test_fit_leaves_the_callers_arrays_unchanged(regression, blobs):
    X, y = regression
    X32 = np.asfortranarray(X.astype(np.float32))
    keep = (X.copy(), y.copy(), X32.copy())
    model = tanh_net(dtype="float32")
    model.fit(X32, y, epochs=2, batch_size=8, validation_data=(X, y))
    model.fit(X, y, epochs=1, validation_split=0.2)
    model.predict(X32)
    model.evaluate(X, y)
    for a, b in zip((X, y, X32), keep):
        np.testing.assert_array_equal(a, b)
    assert X32.flags.f_contiguous
    Xb, yb = blobs
    keep = (Xb.copy(), yb.copy())
    clf = cr.Model([cr.Dense(2, 3)], loss="cross_entropy", dtype="float64", seed=0)
    clf.fit(Xb, yb, epochs=1)
    np.testing.assert_array_equal(Xb, keep[0])
    np.testing.assert_array_equal(yb, keep[1])


def test_zero_epochs_changes_nothing(regression):
    X, y = regression
    model = tanh_net()
    before = model.state_dict()
    hist = model.fit(X, y, epochs=0)
    # the keys a run records, each with no epoch: history.loss is [], not an AttributeError
    assert hist.epochs == 0 and len(hist) == 0 and hist.history == {"loss": [], "r2": []}
    assert hist.loss == [] and hist.r2 == []
    assert_same_weights(model, tanh_net())
    for k, v in before.items():
        np.testing.assert_array_equal(model.state_dict()[k], v)


# ---------------------------------------------------------------------------------------------
# History and validation
# ---------------------------------------------------------------------------------------------

def test_history_records_loss_and_metric(blobs, regression):
    X, y = blobs
    clf = cr.Model([cr.Dense(2, 8), cr.Tanh(), cr.Dense(8, 3)], loss="cross_entropy",
                   optimizer=cr.SGD(lr=0.1), seed=0)
    hist = clf.fit(X, y, epochs=4, batch_size=10)
    assert hist.keys() == ["loss", "accuracy"] and hist.epochs == 4 == len(hist.loss)
    assert hist["loss"] is hist.loss
    assert all(0 <= a <= 1 for a in hist.accuracy)
    assert hist.loss[-1] < hist.loss[0]
    assert not hist.stopped_early and hist.nonfinite is None and not hist.interrupted
    with pytest.raises(AttributeError, match="val_loss"):
        hist.val_loss
    Xr, yr = regression
    reg = tanh_net()
    assert reg.fit(Xr, yr, epochs=2).keys() == ["loss", "r2"]


def test_training_accuracy_is_measured_before_each_step(blobs):
    """The running metric counts each batch's predictions from its forward, before the step."""
    X, y = blobs
    model = cr.Model([cr.Dense(2, 3)], loss="cross_entropy", optimizer=cr.SGD(lr=0.5),
                     dtype="float64", seed=0)
    by_hand = cr.Model([cr.Dense(2, 3)], loss="cross_entropy", optimizer=cr.SGD(lr=0.5),
                       dtype="float64", seed=0)
    hist = model.fit(X, y, epochs=1, batch_size=30, shuffle=False)
    correct = 0
    for b in range(0, 90, 30):
        by_hand.zero_grad()
        out = by_hand.forward(X[b:b + 30])
        correct += int((out.argmax(1) == y[b:b + 30]).sum())
        by_hand.backward(y[b:b + 30])
        by_hand.step()
    assert hist.accuracy == [correct / 90]


def test_validation_data_is_recorded(blobs):
    X, y = blobs
    model = cr.Model([cr.Dense(2, 8), cr.Tanh(), cr.Dense(8, 3)], loss="cross_entropy", seed=0)
    hist = model.fit(X[:60], y[:60], epochs=3, validation_data=(X[60:], y[60:]))
    assert hist.keys() == ["loss", "accuracy", "val_loss", "val_accuracy"]
    final = model.evaluate(X[60:], y[60:])
    assert hist.val_loss[-1] == final["loss"]
    assert hist.val_accuracy[-1] == final["accuracy"]


def test_validation_split_holds_out_the_last_samples(regression):
    X, y = regression
    a, b = tanh_net(seed=5), tanh_net(seed=5)
    ha = a.fit(X, y, epochs=3, batch_size=8, validation_split=0.25)
    hb = b.fit(X[:48], y[:48], epochs=3, batch_size=8, validation_data=(X[48:], y[48:]))
    assert ha == hb
    assert ha.keys() == ["loss", "r2", "val_loss", "val_r2"]
    assert_same_weights(a, b)


# ---------------------------------------------------------------------------------------------
# early stopping
# ---------------------------------------------------------------------------------------------

def overfitting_run(restore: bool, patience: int = 2):
    """A wide net on 12 noisy points, validated on fresh points: val_loss soon turns up."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (12, 1))
    Xv = rng.uniform(-1, 1, (200, 1))
    y, yv = X + rng.standard_normal(X.shape), Xv + rng.standard_normal(Xv.shape)
    model = cr.Model([cr.Dense(1, 64), cr.Tanh(), cr.Dense(64, 64), cr.Tanh(), cr.Dense(64, 1)],
                     optimizer=cr.Adam(lr=0.003), dtype="float64", seed=0)
    stopper = cr.EarlyStopping(patience=patience, restore_best_weights=restore)
    hist = model.fit(X, y, epochs=500, batch_size=12, validation_data=(Xv, yv),
                     early_stopping=stopper)
    return model, hist, (Xv, yv)


def test_early_stopping_stops_after_patience_and_restores_best():
    model, hist, (Xv, yv) = overfitting_run(restore=True)
    assert hist.stopped_early and not hist.interrupted
    best = hist.best_epoch
    assert best == int(np.argmin(hist.val_loss))
    assert best >= 1 and hist.val_loss[-1] > hist.val_loss[best]
    # it ran patience + 1 epochs without improvement after the best one, then stopped
    assert hist.epochs == best + 1 + (2 + 1) < 500
    assert min(hist.val_loss[best + 1:]) >= hist.val_loss[best]
    # the weights are those of the best epoch, so the model scores exactly its val_loss
    assert model.evaluate(Xv, yv)["loss"] == hist.val_loss[best]


def test_early_stopping_without_restore_keeps_the_last_weights():
    model, hist, (Xv, yv) = overfitting_run(restore=False)
    assert hist.stopped_early
    assert model.evaluate(Xv, yv)["loss"] == hist.val_loss[-1] > hist.val_loss[hist.best_epoch]


def test_early_stopping_restores_the_best_epoch_when_the_epochs_run_out():
    # patience longer than the run: it never stops early, yet the weights kept are the best's
    model, hist, (Xv, yv) = overfitting_run(restore=True, patience=10_000)
    assert not hist.stopped_early and hist.epochs == 500 and not hist.interrupted
    best = hist.best_epoch
    assert best == int(np.argmin(hist.val_loss)) and best < 499
    assert model.evaluate(Xv, yv)["loss"] == hist.val_loss[best] < hist.val_loss[-1]


def test_early_stopping_keeps_the_last_step_when_a_callback_interrupts():
    stopper = cr.EarlyStopping(patience=10_000, restore_best_weights=True)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (12, 1))
    y = X + rng.standard_normal(X.shape)
    model = cr.Model([cr.Dense(1, 16), cr.Tanh(), cr.Dense(16, 1)],
                     optimizer=cr.SGD(lr=0.1), dtype="float64", seed=0)
    # validation targets shifted by +-5 per half: val_loss only grows as the fit improves
    Xv, yv = X, y + np.where(np.arange(12)[:, None] < 6, 5.0, -5.0)
    hist = model.fit(X, y, epochs=50, batch_size=12, validation_data=(Xv, yv),
                     callbacks=[stopper, lambda epoch, logs: epoch == 20])
    assert hist.interrupted and hist.epochs == 21 and hist.best_epoch == 0
    assert model.evaluate(Xv, yv)["loss"] == hist.val_loss[-1]


def test_early_stopping_patience_int_monitors_loss_without_validation(xor):
    X, y = xor
    model = cr.Model([cr.Dense(2, 1)], loss="bce_with_logits", optimizer=cr.SGD(lr=1e-9),
                     seed=0)
    # A learning rate this small leaves the float32 loss unchanged: no epoch improves on the first.
    hist = model.fit(X, y, epochs=100, batch_size=4, early_stopping=0)
    assert hist.stopped_early and hist.epochs == 2 and hist.best_epoch == 0


def test_early_stopping_given_as_a_callback_is_reported_as_early_stopping(xor):
    X, y = xor
    model = cr.Model([cr.Dense(2, 1)], loss="bce_with_logits", optimizer=cr.SGD(lr=1e-9),
                     seed=0)
    hist = model.fit(X, y, epochs=100, batch_size=4, callbacks=[cr.EarlyStopping(patience=0)])
    assert hist.stopped_early and not hist.interrupted
    assert hist.epochs == 2 and hist.best_epoch == 0


def test_early_stopping_on_an_unrecorded_key_says_what_is_available(xor):
    X, y = xor
    model = cr.Model([cr.Dense(2, 1)], loss="bce_with_logits", seed=0)
    with pytest.raises(ValueError, match="val_r2.*available"):
        model.fit(X, y, epochs=3, early_stopping=cr.EarlyStopping(monitor="val_r2"))


# ---------------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------------

def test_function_callback_sees_every_epoch_and_can_stop(regression):
    X, y = regression
    seen = []

    def cb(epoch, logs):
        seen.append((epoch, dict(logs)))
        return epoch == 2

    hist = tanh_net().fit(X, y, epochs=10, callbacks=[cb])
    assert [e for e, _ in seen] == [0, 1, 2]
    assert hist.epochs == 3 and hist.interrupted and not hist.stopped_early
    assert [logs["loss"] for _, logs in seen] == hist.loss


def test_callback_object_hooks_run_in_order(regression):
    X, y = regression
    events = []

    class Recorder(cr.Callback):
        def on_train_begin(self, model):
            events.append("begin")

        def on_epoch_end(self, model, epoch, logs):
            events.append(epoch)
            assert isinstance(model, cr.Model)
            if epoch == 1:
                model.stop_training = True

        def on_train_end(self, model):
            events.append("end")

    hist = tanh_net().fit(X, y, epochs=5, callbacks=[Recorder()])
    assert events == ["begin", 0, 1, "end"]
    assert hist.epochs == 2 and hist.interrupted


def test_callback_returning_non_true_does_not_stop(regression):
    X, y = regression
    hist = tanh_net().fit(X, y, epochs=3, callbacks=[lambda e, logs: 1, lambda e, logs: None])
    assert hist.epochs == 3 and not hist.interrupted


def test_exception_in_callback_propagates_and_train_end_runs(regression):
    X, y = regression
    ended = []

    class Ender(cr.Callback):
        def on_train_end(self, model):
            ended.append(True)

    def boom(epoch, logs):
        if epoch == 1:
            raise KeyError("from the callback")

    model = tanh_net()
    with pytest.raises(KeyError, match="from the callback"):
        model.fit(X, y, epochs=5, callbacks=[Ender(), boom])
    assert ended == [True]
    # the model is usable afterwards
    assert model.fit(X, y, epochs=1).epochs == 1


# ---------------------------------------------------------------------------------------------
# clipping options
# ---------------------------------------------------------------------------------------------

def test_clip_grad_value_option_equals_clipping_by_hand(regression):
    X, y = regression
    fitted, by_hand = tanh_net(), tanh_net()
    fitted.fit(X, y, epochs=1, batch_size=32, shuffle=False, clip_grad_value=0.01)
    for b in (0, 32):
        by_hand.zero_grad()
        by_hand.forward(X[b:b + 32])
        by_hand.backward(y[b:b + 32])
        by_hand.clip_grad_value(0.01)
        by_hand.step()
    assert_same_weights(fitted, by_hand)
    unclipped = tanh_net()
    unclipped.fit(X, y, epochs=1, batch_size=32, shuffle=False)
    assert not np.array_equal(unclipped.state_dict()["0.weight"],
                              fitted.state_dict()["0.weight"])


def test_clip_grad_norm_option_records_the_norms(regression):
    X, y = regression
    hist = tanh_net().fit(X, y, epochs=3, batch_size=16, clip_grad_norm=1e-3)
    assert hist.keys() == ["loss", "r2", "grad_norm", "grad_norm_max"]
    for mean, mx in zip(hist.grad_norm, hist.grad_norm_max):
        assert 1e-3 < mean <= mx


# ---------------------------------------------------------------------------------------------
# NaN and inf during training
# ---------------------------------------------------------------------------------------------

def exploding(on_nonfinite, dtype="float32"):
    """A linear net on inputs near float32's limit with a large lr: the loss overflows."""
    big = np.finfo(np.float32).max
    rng = np.random.default_rng(0)
    X = (rng.uniform(0.5, 1.0, (16, 2)) * big / 2).astype(dtype)
    y = rng.standard_normal((16, 1))
    model = cr.Model([cr.Dense(2, 1)], optimizer=cr.SGD(lr=10.0), dtype=dtype, seed=0)
    return model, X, y


def test_nonfinite_raise_names_epoch_and_batch():
    model, X, y = exploding("raise")
    before = model.state_dict()
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 1"):
        model.fit(X, y, epochs=3, batch_size=4)
    for k, v in model.state_dict().items():  # no step was taken on a non-finite gradient
        np.testing.assert_array_equal(v, before[k])


def test_nonfinite_raise_in_a_later_batch():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 2)).astype(np.float32)
    X[9] = np.finfo(np.float32).max / 2  # third batch of 4
    y = rng.standard_normal((16, 1))
    model = cr.Model([cr.Dense(2, 1)], seed=0)
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 3"):
        model.fit(X, y, epochs=2, batch_size=4, shuffle=False)


def test_nonfinite_stop_warns_and_keeps_finite_weights():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 2)).astype(np.float32)
    X[9] = np.finfo(np.float32).max / 2
    y = rng.standard_normal((16, 1))
    model = cr.Model([cr.Dense(2, 1)], seed=0)
    by_hand = cr.Model([cr.Dense(2, 1)], seed=0)
    with pytest.warns(RuntimeWarning, match=r"epoch 1, batch 3"):
        hist = model.fit(X, y, epochs=5, batch_size=4, shuffle=False, on_nonfinite="stop")
    assert hist.nonfinite == (0, 2)
    assert hist.epochs == 1  # the partial epoch is recorded, then training ends
    for b in (0, 4):  # the two finite steps before the bad batch
        by_hand.zero_grad()
        by_hand.forward(X[b:b + 4])
        by_hand.backward(y[b:b + 4])
        by_hand.step()
    assert_same_weights(model, by_hand)
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


def test_nonfinite_stop_in_the_first_batch_records_no_epoch():
    model, X, y = exploding("stop")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        hist = model.fit(X, y, epochs=3, batch_size=4, on_nonfinite="stop")
    assert hist.epochs == 0 and hist.nonfinite == (0, 0) and hist.loss == []
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


@pytest.mark.parametrize("per_epoch", [dict(validation_split=0.25),
                                       dict(callbacks=[lambda epoch, logs: None]),
                                       dict(verbose=1)], ids=["validation", "callback", "verbose"])
def test_nonfinite_stop_in_the_first_batch_with_per_epoch_work(per_epoch, capsys):
    # Found by tests/fuzz: this path indexed the empty logs of the untrained epoch (IndexError).
    model, X, y = exploding("stop")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        hist = model.fit(X, y, epochs=3, batch_size=4, on_nonfinite="stop", **per_epoch)
    assert hist.epochs == 0 and hist.nonfinite == (0, 0)
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


OVERFLOWING_STEPS = [
    (lambda lr: cr.SGD(lr=lr), "float64"),
    (lambda lr: cr.SGD(lr=lr, weight_decay=0.5), "float32"),
    (lambda lr: cr.SGD(lr=lr, momentum=0.9, nesterov=True), "float64"),
    (lambda lr: cr.Adam(lr=lr), "float32"),
    (lambda lr: cr.Adam(lr=lr, amsgrad=True), "float64"),
]


@pytest.mark.parametrize("make,dtype", OVERFLOWING_STEPS)
def test_an_overflowing_step_from_finite_gradients_never_reaches_the_weights(make, dtype):
    """lr x gradient beyond the dtype's range: the loss and gradient are finite, the update is
    not. The first epoch trains normally (so the check runs on tracked weights, not a first
    step); then a learning rate near the dtype's maximum overflows the first step."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 3)), 1e3 * rng.standard_normal((16, 1))
    huge = float(np.finfo(dtype).max) / 8  # times gradients of ~1e3 (Adam: lr / (1 - beta1))
    model = cr.Model([cr.Dense(3, 4), cr.Tanh(), cr.Dense(4, 1)], optimizer=make(0.01),
                     dtype=dtype, seed=0)
    model.fit(X, y, epochs=1, batch_size=4, shuffle=False)
    model.optimizer = make(huge)
    before = model.state_dict()
    with pytest.raises(FloatingPointError, match=r"non-finite update \(the loss [0-9.e+-]+ and "
                                                 r"the gradients were finite.*epoch 1, batch 1"):
        model.fit(X, y, epochs=2, batch_size=4, shuffle=False)
    assert all((model.state_dict()[k] == before[k]).all() for k in before)
    with pytest.warns(RuntimeWarning, match="non-finite update"):
        hist = model.fit(X, y, epochs=2, batch_size=4, shuffle=False, on_nonfinite="stop")
    assert hist.nonfinite == (0, 0) and hist.epochs == 0
    assert all((model.state_dict()[k] == before[k]).all() for k in before)
    model.fit(X, y, epochs=1, batch_size=4, shuffle=False, on_nonfinite="ignore")  # steps on
    assert not all(np.isfinite(v).all() for v in model.state_dict().values())


@pytest.mark.parametrize("make", [
    lambda: cr.SGD(lr=1e3), lambda: cr.SGD(lr=1e3, weight_decay=1e-4),
    lambda: cr.SGD(lr=1e3, momentum=0.9), lambda: cr.SGD(lr=1e3, momentum=0.9, nesterov=True),
    lambda: cr.Adam(lr=1e3), lambda: cr.Adam(lr=1e3, amsgrad=True)])
def test_an_overflowing_step_after_steps_whose_exponents_are_known(make):
    """The check's bounds (the exponents the previous step wrote) must not pass an overflowing
    step: batch 1 steps normally, batch 2 has float32 gradients of ~1e36 (lr x g, or Adam's g^2,
    overflows) from a finite loss."""
    X = np.zeros((8, 3), np.float32)
    X[4:] = 1e18  # batch 2: prediction 3e18, dL/dW = 6e36; lr x 6e36 and (6e36)^2 overflow
    y = np.zeros((8, 1), np.float32)
    start = {"0.weight": np.ones((1, 3), np.float32), "0.bias": np.zeros(1, np.float32)}
    model = cr.Model([cr.Dense(3, 1)], optimizer=make(), seed=0)
    after_one = cr.Model([cr.Dense(3, 1)], optimizer=make(), seed=0)
    model.load_state_dict(start)
    after_one.load_state_dict(start)
    after_one.fit(X[:4], y[:4], epochs=1, batch_size=4, shuffle=False)
    with pytest.raises(FloatingPointError, match=r"non-finite update.*epoch 1, batch 2"):
        model.fit(X, y, epochs=1, batch_size=4, shuffle=False)
    assert_same_weights(model, after_one)


def test_a_step_that_stays_finite_near_the_top_of_the_range_is_taken():
    # float32: w = 1e38, y = 2e38, gradient 2 (w - y) = -2e38; w - 0.5 g = 2e38 is finite, though
    # close enough to the top that only the dry run can tell
    model = cr.Model([cr.Dense(1, 1, bias=False)], optimizer=cr.SGD(lr=0.5), seed=0)
    model.load_state_dict({"0.weight": np.array([[1e38]], np.float32)})
    X, y = np.array([[1.0]], np.float32), np.array([[2e38]], np.float32)
    model.fit(X, y, epochs=1, batch_size=1)
    assert model.state_dict()["0.weight"][0, 0] == np.float32(2e38)


def test_nonfinite_ignore_records_but_does_not_warn():
    model, X, y = exploding("ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = model.fit(X, y, epochs=2, batch_size=4, on_nonfinite="ignore")
    assert hist.epochs == 2 and hist.nonfinite == (0, 0)
    assert not all(np.isfinite(v).all() for v in model.state_dict().values())


def test_callback_returning_numpys_true_stops(regression):
    # np.isnan(...) and friends give np.True_: it stops as True does
    X, y = regression
    hist = tanh_net().fit(X, y, epochs=5, callbacks=[lambda e, logs: np.isfinite(logs["loss"])])
    assert hist.epochs == 1 and hist.interrupted


def test_bad_verbose_is_refused_before_any_callback_or_change(regression):
    X, y = regression
    model = tanh_net()
    model.forward(X)
    calls = []

    class Recorder(cr.Callback):
        def on_train_begin(self, model):
            calls.append("begin")

        def on_train_end(self, model):
            calls.append("end")
    with pytest.raises(ValueError, match="verbose must be 0, 1 or 2, got 3"):
        model.fit(X, y, epochs=2, verbose=3, callbacks=[Recorder()])
    assert calls == []
    model.backward(y)  # the forward before the refused fit still stands


@pytest.mark.parametrize("offset", [0.0, 1e6, 3e8, 1e9])
def test_training_r2_survives_targets_far_from_zero(offset):
    # R^2 from running sums of t and t^2 lost every digit at an offset 1e4 times the spread,
    # and was clipped to 0; it now merges per-batch means and deviations, as evaluate's
    # two-pass figure (sklearn's r2_score) does
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 3))
    w = np.array([[1.0, -2.0, 0.5]])
    y = X @ w.T + offset + 0.1 * rng.standard_normal((96, 1))
    model = cr.Model([cr.Dense(3, 1)], dtype="float64", optimizer=cr.SGD(lr=1e-300), seed=0)
    model.load_state_dict({"0.weight": w, "0.bias": np.array([offset])})
    pred = model.predict(X)
    want = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    hist = model.fit(X, y, epochs=1, batch_size=10, shuffle=False)  # 10 batches, a short last
    assert hist.r2[0] == pytest.approx(want, rel=1e-9)
    assert model.evaluate(X, y)["r2"] == pytest.approx(want, rel=1e-12)


def test_grad_norm_max_keeps_a_nan_norm_as_torch_max_would():
    # with on_nonfinite="ignore" a NaN pre-clip norm was dropped by std::max: the epoch showed a
    # NaN mean beside a finite (or 0) maximum. A relu RNN whose states overflow float32 makes
    # inf - inf in the gradients.
    g = np.random.default_rng(2)
    X = np.abs(g.normal(size=(8, 12, 2))).astype(np.float32) + 1
    Y = g.normal(size=(8, 12, 1)).astype(np.float32)
    model = cr.Model([cr.RNN(2, 4, nonlinearity="relu"), cr.Dense(4, 1)], dtype="float32", seed=1)
    sd = model.state_dict()
    sd["0.weight_hh_l0"] = np.full((4, 4), 30.0, np.float32)
    model.load_state_dict(sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = model.fit(X, Y, epochs=1, batch_size=4, shuffle=False, on_nonfinite="ignore",
                         clip_grad_norm=1.0)
    assert np.isnan(hist.grad_norm[0]) and np.isnan(hist.grad_norm_max[0])
