"""A plain-PyTorch peer of the nst-jax Gatys loss and its ``torch.optim.LBFGS`` solve (the speed benchmark's baseline).

Same network, same loss, same conventions as ``nst_jax.objective`` with the ``gatys`` preset, written independently in
PyTorch (float32, batch of one, NCHW; on the CPU or any ``device`` torch offers):

* network: the VGG conv stack of the nst-jax params tree (kernels HWIO -> OIHW), ``conv2d`` 3x3 stride 1 padding 1,
  ReLU, ``max_pool2d`` 2x2 stride 2 (floor); input RGB in [0, 1] -> Caffe preprocessing (RGB->BGR, x255, minus the
  mean 103.939, 116.779, 123.68);
* content loss ``mean((F - P)^2)`` at the content layers (relu4_2);
* Gram ``G = F F^T / (H W)`` of feats [C, H*W]; style loss ``sum_l w_l mean((G_l - A_l)^2)`` with
  ``w_l = 1 / C_l^2`` over relu1_1 .. relu5_1;
* total ``alpha * content + beta * style`` (alpha = 1, beta = 1e3; no TV term in the gatys preset).

The optimiser is ``torch.optim.LBFGS(lr=1, history_size=100, line_search_fn="strong_wolfe")``. Its objective is the
loss of the image clipped to [0, 1], ``f(clamp(x, 0, 1))``: the variable x is unconstrained (and drifts outside the
box), but every recorded loss -- and the image one would save -- is that of the clipped image, which is what nst-jax's
projected iterates report. The closure counts function+gradient (f+g) evaluations and timestamps each one.
"""

from __future__ import annotations

import time
from typing import Dict, List, Mapping, NamedTuple, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CAFFE_MEAN_BGR", "TorchVGG", "TorchGatysLoss", "LBFGSTrace", "to_nchw", "run_lbfgs"]

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def to_nchw(image_HW3: np.ndarray, device="cpu") -> torch.Tensor:
    """[H, W, 3] float image -> [1, 3, H, W] float32 tensor (a copy) on ``device``."""
    arr = np.ascontiguousarray(np.asarray(image_HW3, np.float32).transpose(2, 0, 1)[None])
    return torch.from_numpy(arr.copy()).to(device)


class TorchVGG:
    """The VGG conv stack of an nst-jax params tree (``{"conv3_1": {"kernel": [3,3,Cin,Cout], "bias": [Cout]}}``).

    The layer order is read off the conv names: block b has as many convs as there are ``conv{b}_*`` keys, each
    followed by ``relu{b}_{i}``; every block is followed by ``pool{b}`` (2x2, stride 2, floor).
    """

    def __init__(self, params: Mapping[str, Mapping[str, object]], device="cpu"):
        self.device = torch.device(device)
        names = sorted(params, key=lambda n: tuple(int(p) for p in n[4:].split("_")))
        if not names or any(not n.startswith("conv") for n in names):
            raise ValueError(f"params must be a tree keyed by conv layer names such as conv1_1, got {list(params)[:4]}")
        self.weights: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self.sequence: List[Tuple[str, str]] = []
        block_of = lambda n: int(n[4:].split("_")[0])  # noqa: E731
        for j, name in enumerate(names):
            kernel_HWIO = np.asarray(params[name]["kernel"], np.float32)
            bias = np.asarray(params[name]["bias"], np.float32)
            w_OIHW = torch.from_numpy(np.ascontiguousarray(kernel_HWIO.transpose(3, 2, 0, 1)))
            self.weights[name] = (w_OIHW.to(self.device), torch.from_numpy(bias.copy()).to(self.device))
            suffix = name[4:]
            self.sequence += [(name, "conv"), ("relu" + suffix, "relu")]
            if j + 1 == len(names) or block_of(names[j + 1]) != block_of(name):
                self.sequence.append((f"pool{block_of(name)}", "pool"))
        self.channels = {"relu" + n[4:]: int(self.weights[n][0].shape[0]) for n in names}

    @staticmethod
    def preprocess(image_13HW: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> Caffe input: BGR, x255, minus the ImageNet mean. [1, 3, H, W]."""
        mean = torch.tensor(CAFFE_MEAN_BGR, dtype=image_13HW.dtype, device=image_13HW.device).view(1, 3, 1, 1)
        return image_13HW.flip(1) * 255.0 - mean

    def features(self, image_13HW: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        """``{layer: feats [1, C, H_l, W_l]}`` for the named layers (the pass stops after the deepest)."""
        wanted = set(layers)
        known = {n for n, _ in self.sequence}
        if wanted - known:
            raise ValueError(f"unknown layer(s) {sorted(wanted - known)}; this network has relu1_1 ... ")
        out: Dict[str, torch.Tensor] = {}
        x = self.preprocess(image_13HW)
        for name, kind in self.sequence:
            if kind == "conv":
                w, b = self.weights[name]
                x = F.conv2d(x, w, b, stride=1, padding=1)
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out


def gram(feats_1CHW: torch.Tensor) -> torch.Tensor:
    """``G = F F^T / (H W)`` of feats [1, C, H, W] viewed as [C, H*W]; [C, C]."""
    _, c, h, w = feats_1CHW.shape
    f = feats_1CHW.reshape(c, h * w)
    return (f @ f.t()) / (h * w)


class TorchGatysLoss:
    """The gatys-preset total loss of one image, targets computed once from the content and style images.

    ``loss(image_13HW)`` = ``alpha * sum_c mean((F_c - P_c)^2) + beta * sum_l (1/C_l^2) mean((G_l - A_l)^2)``.
    """

    def __init__(self, net: TorchVGG, content_HW3: np.ndarray, style_HW3: np.ndarray, *,
                 content_layers=("relu4_2",), style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 alpha: float = 1.0, beta: float = 1e3):
        self.net = net
        self.content_layers, self.style_layers = tuple(content_layers), tuple(style_layers)
        self.layers = tuple(dict.fromkeys(self.content_layers + self.style_layers))
        self.alpha, self.beta = float(alpha), float(beta)
        self.layer_weights = [1.0 / float(net.channels[n]) ** 2 for n in self.style_layers]
        with torch.no_grad():
            cf = net.features(to_nchw(content_HW3, net.device), self.content_layers)
            sf = net.features(to_nchw(style_HW3, net.device), self.style_layers)
            self.content_targets = {n: cf[n].detach() for n in self.content_layers}
            self.gram_targets = {n: gram(sf[n]).detach() for n in self.style_layers}

    def terms(self, image_13HW: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.net.features(image_13HW, self.layers)
        content = sum(torch.mean((feats[n] - self.content_targets[n]) ** 2) for n in self.content_layers)
        style = sum(w * torch.mean((gram(feats[n]) - self.gram_targets[n]) ** 2)
                    for w, n in zip(self.layer_weights, self.style_layers))
        return {"content": content, "style": style, "total": self.alpha * content + self.beta * style}

    def __call__(self, image_13HW: torch.Tensor) -> torch.Tensor:
        return self.terms(image_13HW)["total"]


class LBFGSTrace(NamedTuple):
    """One ``torch.optim.LBFGS`` run, one entry per closure call (= one f+g evaluation).

    Attributes:
      losses: [N] loss of the clipped image at each f+g.
      wall: [N] seconds from the start of the run to the end of each f+g (optimiser overhead included).
      fg_seconds: [N] duration of each f+g (forward + backward) alone.
      warmup_seconds: one untimed f+g before the run (allocator / oneDNN primitive creation).
      image: [H, W, 3] the clipped final image.
    """

    losses: np.ndarray
    wall: np.ndarray
    fg_seconds: np.ndarray
    warmup_seconds: float
    image: np.ndarray


class _BudgetSpent(Exception):
    pass


def run_lbfgs(loss: TorchGatysLoss, x0_HW3: np.ndarray, max_fg: int = 100, *, history: int = 100,
              lr: float = 1.0) -> LBFGSTrace:
    """Minimise ``loss(clamp(x, 0, 1))`` from ``x0`` with strong-Wolfe L-BFGS for exactly ``max_fg`` f+g evaluations.

    The closure raises once the budget is spent (torch's own ``max_eval`` can be overshot by a line search); the
    trace holds exactly ``max_fg`` entries unless the optimiser stops earlier (zero step).
    """
    if max_fg < 1:
        raise ValueError(f"the f+g budget must be >= 1, got {max_fg}")
    x = to_nchw(x0_HW3, loss.net.device).requires_grad_(True)

    def fg():
        value = loss(torch.clamp(x, 0.0, 1.0))
        if x.grad is not None:
            x.grad = None
        value.backward()
        return value

    t = time.perf_counter()
    fg()
    warmup = time.perf_counter() - t
    x.grad = None

    opt = torch.optim.LBFGS([x], lr=lr, history_size=history, line_search_fn="strong_wolfe", max_iter=max_fg,
                            max_eval=max_fg, tolerance_grad=0.0, tolerance_change=0.0)
    losses, wall, secs = [], [], []
    t0 = time.perf_counter()

    def closure():
        if len(losses) >= max_fg:
            raise _BudgetSpent
        opt.zero_grad(set_to_none=True)
        t1 = time.perf_counter()
        value = loss(torch.clamp(x, 0.0, 1.0))
        value.backward()
        t2 = time.perf_counter()
        losses.append(float(value.detach()))
        secs.append(t2 - t1)
        wall.append(t2 - t0)
        return value

    try:
        while len(losses) < max_fg:
            before = len(losses)
            opt.step(closure)
            if len(losses) == before + 1 and before > 0:  # converged / zero step: nothing more will happen
                break
    except _BudgetSpent:
        pass
    image = torch.clamp(x.detach(), 0.0, 1.0)[0].permute(1, 2, 0).cpu().numpy().copy()
    return LBFGSTrace(np.asarray(losses), np.asarray(wall), np.asarray(secs), warmup, image)
