"""The peers: PyTorch (eager), JAX (jit over one whole training step) and scikit-learn's MLP,
each training the workload's network exactly as chainrule does.

Every trainer takes (workload, initial params with PyTorch names, X, y) and offers
``run(steps) -> last loss`` (steps minibatches in order, cycling through the data, returning when
the work is done), ``losses(k)`` (the loss of each of the next k steps) and ``params()``
(float64 copies, PyTorch names). Importing this module needs only NumPy; each trainer imports
its framework when built and raises ImportError when it is absent.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from workloads import Workload, batches

__all__ = ["TorchTrainer", "JaxTrainer", "SklearnTrainer", "PEERS", "applies"]


def applies(system: str, w: Workload) -> bool:
    """Whether a system can train workload w (scikit-learn has feedforward MLPs only)."""
    if system == "sklearn":
        return w.kind == "mlp"
    return True


# ==================================================================== PyTorch
class TorchTrainer:
    """torch.nn modules, torch.optim.SGD, the usual zero_grad / forward / backward / step."""

    name = "torch"

    def __init__(self, w: Workload, params: Dict[str, np.ndarray], X: np.ndarray,
                 y: np.ndarray) -> None:
        import torch
        import torch.nn.functional as F
        self.torch = torch
        self.w = w
        if w.kind == "mlp":
            mods: List[Any] = []
            for k in range(len(w.sizes) - 1):
                mods.append(torch.nn.Linear(w.sizes[k], w.sizes[k + 1]))
                if k < len(w.sizes) - 2:
                    mods.append(torch.nn.ReLU() if w.activation == "relu" else torch.nn.Tanh())
            self.model = torch.nn.Sequential(*mods)
            names = {k: k for k in params}
        else:
            self.model = _TorchSeq(torch, w.kind, *w.sizes)
            names = {k: ("rnn." if k.startswith("0.") else "head.") + k[2:] for k in params}
        with torch.no_grad():
            sd = self.model.state_dict()
            for k, v in params.items():
                sd[names[k]].copy_(torch.from_numpy(np.asarray(v, np.float32)))
        self._names = names
        self.opt = torch.optim.SGD(self.model.parameters(), lr=w.lr)
        self.loss_fn = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy,
                        "bce_with_logits": F.binary_cross_entropy_with_logits}[w.loss]
        self.data = [(torch.from_numpy(xb), torch.from_numpy(yb)) for xb, yb in batches(w, X, y)]
        self.i = 0

    def run(self, steps: int) -> float:
        model, opt, loss_fn, data = self.model, self.opt, self.loss_fn, self.data
        loss = None
        for _ in range(steps):
            x, y = data[self.i]
            self.i = (self.i + 1) % len(data)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        return loss.item() if loss is not None else 0.0

    def losses(self, steps: int) -> List[float]:
        return [self.run(1) for _ in range(steps)]

    def params(self) -> Dict[str, np.ndarray]:
        sd = self.model.state_dict()
        return {k: sd[v].detach().numpy().astype(np.float64) for k, v in self._names.items()}


def _TorchSeq(torch: Any, kind: str, I: int, H: int) -> Any:
    """nn.RNN (tanh) or nn.LSTM, batch-first, then nn.Linear(H, 1) on every step."""

    class Seq(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            cls = torch.nn.LSTM if kind == "lstm" else torch.nn.RNN
            self.rnn = cls(I, H, batch_first=True)
            self.head = torch.nn.Linear(H, 1)

        def forward(self, x: Any) -> Any:
            h, _ = self.rnn(x)
            return self.head(h)

    return Seq()


# ==================================================================== JAX
class JaxTrainer:
    """One jax.jit-compiled function per training step (forward, grad, SGD update), parameters
    donated; the recurrence is a lax.scan. Compiled at construction, outside any timing."""

    name = "jax"

    def __init__(self, w: Workload, params: Dict[str, np.ndarray], X: np.ndarray,
                 y: np.ndarray) -> None:
        import jax
        import jax.numpy as jnp
        self.jax = jax
        self.w = w
        lr = w.lr
        loss_fn = _jax_loss_fn(jax, jnp, w)

        def step(p: Dict[str, Any], x: Any, t: Any) -> Any:
            loss, g = jax.value_and_grad(loss_fn)(p, x, t)
            return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), loss

        self._step = jax.jit(step, donate_argnums=0)
        self.p = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in params.items()}
        self.data = [(jax.device_put(xb), jax.device_put(yb)) for xb, yb in batches(w, X, y)]
        self.i = 0
        # Compile (and run once) on a copy of the parameters; the timed runs hit the cache.
        warm = {k: jnp.array(v, copy=True) for k, v in self.p.items()}
        jax.block_until_ready(self._step(warm, *self.data[0]))

    def run(self, steps: int) -> float:
        step, data, p = self._step, self.data, self.p
        loss = None
        for _ in range(steps):
            x, y = data[self.i]
            self.i = (self.i + 1) % len(data)
            p, loss = step(p, x, y)
        self.p = p
        self.jax.block_until_ready(p)
        return float(loss) if loss is not None else 0.0

    def losses(self, steps: int) -> List[float]:
        return [self.run(1) for _ in range(steps)]

    def params(self) -> Dict[str, np.ndarray]:
        return {k: np.asarray(v, np.float64) for k, v in self.p.items()}


def _jax_loss_fn(jax: Any, jnp: Any, w: Workload) -> Any:
    def loss_of(z: Any, t: Any) -> Any:
        if w.loss == "mse":
            return jnp.mean((z - t) ** 2)
        if w.loss == "bce_with_logits":
            return jnp.mean(jnp.maximum(z, 0) - z * t + jnp.log1p(jnp.exp(-jnp.abs(z))))
        logp = jax.nn.log_softmax(z, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))

    if w.kind == "mlp":
        L = len(w.sizes) - 1
        act = jax.nn.relu if w.activation == "relu" else jnp.tanh

        def mlp_loss(p: Dict[str, Any], x: Any, t: Any) -> Any:
            a = x
            for k in range(L):
                a = a @ p[f"{2 * k}.weight"].T + p[f"{2 * k}.bias"]
                if k < L - 1:
                    a = act(a)
            return loss_of(a, t)

        return mlp_loss

    lstm = w.kind == "lstm"

    def seq_loss(p: Dict[str, Any], x: Any, t: Any) -> Any:
        B = x.shape[0]
        H = p["0.weight_hh_l0"].shape[1]
        xt = jnp.swapaxes(x, 0, 1)                                   # (T, B, I)
        Z = xt @ p["0.weight_ih_l0"].T + p["0.bias_ih_l0"] + p["0.bias_hh_l0"]
        Whh_t = p["0.weight_hh_l0"].T

        if lstm:
            def cell(carry: Any, z: Any) -> Any:
                h, c = carry
                a = z + h @ Whh_t
                i, f, g, o = jnp.split(a, 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), h
            zeros = jnp.zeros((B, H), x.dtype)
            _, hs = jax.lax.scan(cell, (zeros, zeros), Z)
        else:
            def cell(h: Any, z: Any) -> Any:
                h = jnp.tanh(z + h @ Whh_t)
                return h, h
            _, hs = jax.lax.scan(cell, jnp.zeros((B, H), x.dtype), Z)
        out = hs @ p["1.weight"].T + p["1.bias"]                     # (T, B, 1)
        return loss_of(out, jnp.swapaxes(t, 0, 1))

    return seq_loss


# ==================================================================== scikit-learn
class SklearnTrainer:
    """MLPClassifier / MLPRegressor with solver="sgd", momentum 0, constant learning rate,
    alpha=0 (no L2), shuffle off, batch_size the workload's; partial_fit runs one epoch over the
    rows it is given, one minibatch step per batch_size rows.

    scikit-learn's regression loss is ½·mean((p − t)²) but its gradient is (p − t)/B per output
    (the sum over outputs of the per-output mean), where MSE's is 2(p − t)/(B·O): the learning
    rate is scaled by 2/O so that every update equals the MSE/SGD one, and the loss is doubled.
    """

    name = "sklearn"

    def __init__(self, w: Workload, params: Dict[str, np.ndarray], X: np.ndarray,
                 y: np.ndarray) -> None:
        if w.kind != "mlp":
            raise NotImplementedError("scikit-learn has no recurrent networks")
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        self.w = w
        self.regress = w.loss == "mse"
        L = len(w.sizes) - 1
        lr = w.lr * 2.0 / w.sizes[-1] if self.regress else w.lr
        common = dict(hidden_layer_sizes=tuple(w.sizes[1:-1]), activation=w.activation,
                      solver="sgd", alpha=0.0, batch_size=w.batch, learning_rate="constant",
                      learning_rate_init=lr, momentum=0.0, nesterovs_momentum=False,
                      shuffle=False, max_iter=1, tol=0.0, n_iter_no_change=2 ** 30,
                      early_stopping=False, random_state=0)
        self.X = np.ascontiguousarray(X[:w.n_batches * w.batch], np.float32)
        if self.regress:
            self.model = MLPRegressor(**common)
            self.y = np.ascontiguousarray(y[:len(self.X)], np.float32)
            self.classes = None
        else:
            self.model = MLPClassifier(**common)
            self.y = np.asarray(y[:len(self.X)]).reshape(len(self.X)).astype(np.int64)
            n_out = w.sizes[-1]
            self.classes = np.arange(2 if n_out == 1 else n_out)
        # One partial_fit builds the network (scikit-learn has no other way to size it), then
        # the weights are replaced by the shared initial ones (coefs_ are (in, out)).
        B = w.batch
        self.model.partial_fit(self.X[:B], self.y[:B], **self._classes_kw())
        self.model.coefs_ = [np.array(params[f"{2 * k}.weight"].T, np.float32) for k in range(L)]
        self.model.intercepts_ = [np.array(params[f"{2 * k}.bias"], np.float32)
                                  for k in range(L)]
        self.i = 0
        self.nb = w.n_batches

    def _classes_kw(self) -> Dict[str, Any]:
        return {} if self.regress or hasattr(self.model, "classes_") else {
            "classes": self.classes}

    def run(self, steps: int) -> float:
        B, m = self.w.batch, self.model
        loss = 0.0
        while steps > 0:
            n = min(steps, self.nb - self.i)
            lo, hi = self.i * B, (self.i + n) * B
            m.partial_fit(self.X[lo:hi], self.y[lo:hi])
            loss = m.loss_
            self.i = (self.i + n) % self.nb
            steps -= n
        return 2.0 * loss if self.regress else loss

    def losses(self, steps: int) -> List[float]:
        return [self.run(1) for _ in range(steps)]

    def params(self) -> Dict[str, np.ndarray]:
        p: Dict[str, np.ndarray] = {}
        for k, (W, b) in enumerate(zip(self.model.coefs_, self.model.intercepts_)):
            p[f"{2 * k}.weight"] = W.T.astype(np.float64)
            p[f"{2 * k}.bias"] = b.astype(np.float64)
        return p


PEERS = {"torch": TorchTrainer, "jax": JaxTrainer, "sklearn": SklearnTrainer}
